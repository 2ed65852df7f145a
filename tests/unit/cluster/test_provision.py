"""`up` / `down` on an existing cluster (a fake dashboard that is also the service): the secrets of the
data folder, the Serve config sent, the readiness wait, and the lines reported."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT
from tests.unit.fake_http import FakeServer
from ufme_ray.cluster import ClusterError
from ufme_ray.cluster.provision import LocalHead, down, up
from ufme_ray.config import UfmeSettings


@pytest.fixture
def settings(tmp_path, monkeypatch) -> UfmeSettings:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token")
    return UfmeSettings.load(data_dir=tmp_path / "data", model_dir=tmp_path / "models", storage_uri="file:///srv/store")


def port_of(server: FakeServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_up_deploys_with_this_machines_paths_and_waits_until_ready(fake_dashboard, settings, tmp_path):
    fake_dashboard.on("PUT", "/api/serve/applications/", (200, {}))
    answers = iter([(503, {"ready": False}), (200, {"ready": True})])
    fake_dashboard.on("GET", "/ready", lambda _: next(answers, (200, {"ready": True})))
    fake_dashboard.on("GET", "/api/serve/applications/", (200, {"applications": {"ufme": {"status": "DEPLOYING"}}}))
    lines, waits = [], []
    url = up(
        settings, serve_config=REPO_ROOT / "serve_config.yaml", address=fake_dashboard.url, head=LocalHead(),
        port=port_of(fake_dashboard), shards=3, timeout_s=30, report=lines.append, on_wait=waits.append,
    )
    assert url == f"http://127.0.0.1:{port_of(fake_dashboard)}"
    (put,) = fake_dashboard.sent("PUT")
    assert put.headers["authorization"] == "Bearer ray-token"
    assert put.body["http_options"]["port"] == port_of(fake_dashboard)
    sent = put.body["applications"][0]["args"]["settings"]
    data = tmp_path / "data"
    assert sent["data_dir"] == str(data) and sent["storage_uri"] == "file:///srv/store"
    assert sent["gallery"]["num_shards"] == 3 and sent["runtime"] == {"intra_op_threads": 1}  # merged into the file's
    assert sent["auth"] == {"keys_file": str(data / "api-keys.json")}
    assert sent["audit"] == {"subject_key_file": str(data / "audit-subject.key")}
    assert (data / "admin.key").stat().st_mode & 0o777 == 0o600
    assert waits == ["HTTP 503: {\"ready\": false}"]
    assert lines[0].startswith(f"created the admin API key (shown once; stored for the CLI in {data / 'admin.key'}")
    assert lines[1:] == [
        f"deploying the Serve application to {fake_dashboard.url} ...",
        f"UFME-Ray is ready at {url} (OpenAPI: {url}/docs)",
        f"data: {data}   storage: file:///srv/store",
        "Ray token auth is on: run `export RAY_AUTH_MODE=token` before `serve status` or `ray job submit`.",
    ]
    # A second `up` keeps the keys: no new admin key is made or shown.
    again: list[str] = []
    up(settings, serve_config=REPO_ROOT / "serve_config.yaml", address=fake_dashboard.url, head=LocalHead(),
       port=port_of(fake_dashboard), timeout_s=30, report=again.append)
    assert not any("admin API key" in line for line in again)


def test_up_fails_fast_when_the_service_answers_500(fake_dashboard, settings):
    fake_dashboard.on("PUT", "/api/serve/applications/", (200, {}))
    fake_dashboard.on("GET", "/ready", (500, {"error": "bug"}))
    with pytest.raises(ClusterError, match="fails its readiness check"):
        up(settings, serve_config=REPO_ROOT / "serve_config.yaml", address=fake_dashboard.url, head=LocalHead(),
           port=port_of(fake_dashboard), timeout_s=30, report=lambda line: None)


def test_up_fails_fast_with_serves_reason_when_the_deployment_failed(fake_dashboard, settings):
    fake_dashboard.on("PUT", "/api/serve/applications/", (200, {}))
    fake_dashboard.on("GET", "/ready", (503, "Deployment(name='Gateway', app='ufme') is unavailable because it failed to deploy."))
    fake_dashboard.on("GET", "/api/serve/applications/", (200, {"applications": {"ufme": {
        "status": "DEPLOY_FAILED", "message": "Deploying app 'ufme' failed",
        "deployments": {
            "Gateway": {"status": "DEPLOY_FAILED", "message": "Traceback ...\nConfigError: image.max_pixels=40000000 ..."},
            "Detector": {"status": "HEALTHY", "message": ""},
        },
    }}}))
    with pytest.raises(ClusterError, match="(?s)Serve could not deploy.*Gateway: Traceback .*ConfigError: image.max_pixels") as raised:
        up(settings, serve_config=REPO_ROOT / "serve_config.yaml", address=fake_dashboard.url, head=LocalHead(),
           port=port_of(fake_dashboard), timeout_s=30, report=lambda line: None)
    assert "Detector" not in str(raised.value)
    assert len(fake_dashboard.sent("GET", "/ready")) == 1  # at once, not after the timeout


def test_down_on_an_existing_cluster_removes_the_apps_and_leaves_ray_running(fake_dashboard, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token")
    fake_dashboard.on("GET", "/api/version", (200, {"version": "4"}))
    fake_dashboard.on("DELETE", "/api/serve/applications/", (200, {}))
    lines: list[str] = []
    down(address=fake_dashboard.url, head=LocalHead(), report=lines.append)
    assert [r.method for r in fake_dashboard.sent("DELETE")] == ["DELETE"]
    assert lines == [
        f"removed the Serve applications from {fake_dashboard.url}",
        "the shard actors (detached) keep running on that cluster; the next deploy reuses them",
    ]
