"""`ufme-ray up` deploys every setting its settings file (--config, or UFME_CONFIG) and UFME_* give,
not only paths, shards, auth and audit; live ones also go into the Gateway's user_config, where they
win over serve_config.yaml's as they do over its args.settings. `ufme-ray compact` gives its job
the gallery and encryption settings it was given the same way."""

from __future__ import annotations

import json
import os

import pytest

from tests.unit.fake_http import FakeServer, serve_job_api
from ufme_ray.cli import main

KEY = "B" * 43 + "="


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    for key in [k for k in os.environ if k.startswith("UFME_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token")
    monkeypatch.setenv("UFME_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UFME_MODEL_DIR", str(tmp_path / "models"))


@pytest.fixture
def settings_file(tmp_path):
    path = tmp_path / "ufme.yaml"
    path.write_text(
        "models: {liveness: [minifasnet_v2]}\n"
        "thresholds: {similarity_min: 0.52, detection_min: 0.7}\n"  # what `calibrate --write-config` writes
        "duplicates: {action: warn}\n"
        f"encryption: {{key_id: k1, keys: {{k1: '{KEY}'}}}}\n"
        "gallery: {index: {nlist: 8}}\n"
    )
    return path


def deployed(dashboard: FakeServer, *argv: str) -> dict:
    dashboard.on("PUT", "/api/serve/applications/", (200, {}))
    dashboard.on("GET", "/ready", (200, {"ready": True}))
    port = dashboard.url.rsplit(":", 1)[1]
    assert main([*argv, "up", "--address", dashboard.url, "--port", port, "--timeout-s", "10"]) == 0
    (put,) = dashboard.sent("PUT")
    return put.body["applications"][0]


def gateway_user_config(app: dict) -> dict:
    return next(d for d in app["deployments"] if d["name"] == "Gateway")["user_config"]


@pytest.mark.parametrize("way", ["--config", "UFME_CONFIG"])
def test_up_forwards_the_whole_settings_file(fake_dashboard, settings_file, monkeypatch, way):
    if way == "--config":
        app = deployed(fake_dashboard, "--config", str(settings_file))
    else:
        monkeypatch.setenv("UFME_CONFIG", str(settings_file))
        app = deployed(fake_dashboard)
    sent = app["args"]["settings"]
    assert sent["models"] == {"liveness": ["minifasnet_v2"]}
    assert sent["duplicates"] == {"action": "warn"}
    assert sent["encryption"] == {"key_id": "k1", "keys": {"k1": KEY}}
    assert sent["gallery"] == {"num_shards": 2, "index": {"nlist": 8}}  # merged into serve_config.yaml's
    assert sent["runtime"] == {"intra_op_threads": 1}  # what the file leaves out stays the profile's
    live = gateway_user_config(app)
    # The file's threshold replaces the profile's user_config value (which would otherwise shadow it) ...
    assert live["thresholds"]["similarity_min"] == 0.52 and live["thresholds"]["detection_min"] == 0.7
    assert live["duplicates"] == {"action": "warn"}
    # ... and the profile's other live values stay.
    assert live["thresholds"]["liveness_min"] == 0.5 and live["gates"]["enrol"] == ["quality", "liveness", "morph"]


def test_the_environment_outranks_the_file_in_what_up_deploys(fake_dashboard, settings_file, monkeypatch):
    monkeypatch.setenv("UFME_DUPLICATES__ACTION", "allow")
    monkeypatch.setenv("UFME_THRESHOLDS__SIMILARITY_MIN", "0.61")
    app = deployed(fake_dashboard, "--config", str(settings_file))
    assert app["args"]["settings"]["duplicates"] == {"action": "allow"}
    assert gateway_user_config(app)["duplicates"] == {"action": "allow"}
    assert gateway_user_config(app)["thresholds"]["similarity_min"] == 0.61


def test_compaction_job_gets_the_files_gallery_and_encryption(fake_dashboard, settings_file, monkeypatch):
    monkeypatch.setenv("UFME_STORAGE_URI", "file:///srv/ufme/store")
    serve_job_api(fake_dashboard, [])
    assert main(["--config", str(settings_file), "compact", "--address", fake_dashboard.url, "--now"]) == 0
    (post,) = fake_dashboard.sent("POST", "/api/jobs/")
    env = post.body["runtime_env"]["env_vars"]
    assert json.loads(env["UFME_ENCRYPTION"]) == {"key_id": "k1", "keys": {"k1": KEY}}
    assert json.loads(env["UFME_GALLERY"]) == {"index": {"nlist": 8}}


def test_compaction_job_leaves_the_clusters_encryption_alone_when_none_is_given(fake_dashboard, monkeypatch):
    monkeypatch.setenv("UFME_STORAGE_URI", "file:///srv/ufme/store")
    serve_job_api(fake_dashboard, [])
    assert main(["compact", "--address", fake_dashboard.url, "--now"]) == 0
    (post,) = fake_dashboard.sent("POST", "/api/jobs/")
    assert "UFME_ENCRYPTION" not in post.body["runtime_env"]["env_vars"]
