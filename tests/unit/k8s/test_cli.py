"""`ufme-ray k8s …` end to end against the local fake API server: exit codes, output, and what
reaches it. `k8s compact` against the session's real Ray dashboard: tests/integration/test_k8s_compact.py."""

from __future__ import annotations

import pytest

from tests.unit.fake_http import FakeServer
from tests.unit.k8s.conftest import echo_apply, serve_discovery
from tests.unit.k8s.documented import OVERRIDDEN_ARGS, OVERRIDDEN_AUTOSCALING, SHARDS
from tests.unit.k8s.test_client import RS_PATH, path_of, rayservice_object, serve_status
from ufme_ray.cli import main


def run(*argv: str) -> int:
    return main(list(argv))


def test_sync_check_passes_on_the_committed_tree(capsys):
    assert run("k8s", "sync", "--check") == 0
    assert "match serve_config.yaml" in capsys.readouterr().out


def test_render_prints_every_manifest_with_the_image(capsys):
    assert run("k8s", "render", "--env", "staging", "--image", "ghcr.io/acme/ufme-ray:abc") == 0
    out = capsys.readouterr().out
    assert "kind: RayService" in out and "kind: CronJob" in out
    assert "image: ghcr.io/acme/ufme-ray:abc" in out and "registry.invalid" not in out


def test_render_serve_config_only_is_what_serve_deploy_takes(tmp_path, layout):
    from ray.serve.schema import ServeDeploySchema
    import yaml

    out = tmp_path / "serve.yaml"
    assert run("k8s", "render", "--env", "production", "--serve-config-only", "--output", str(out)) == 0
    config = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(config)
    # Written out, not recomputed by the renderer: serve_config.yaml plus production's overrides.
    assert out.read_text().splitlines()[0] == (
        "# serve_config.yaml with the overrides of kuberay/overlays/production/serve-overrides.yaml"
    )
    expected = yaml.safe_load(layout.serve_config.read_text())
    (app,) = expected["applications"]
    app["args"].update(OVERRIDDEN_ARGS["production"])
    app["args"]["settings"]["gallery"]["num_shards"] = SHARDS["production"]
    autoscaling = OVERRIDDEN_AUTOSCALING["production"]
    for deployment in app["deployments"]:
        deployment["autoscaling_config"] = autoscaling.get(deployment["name"], deployment["autoscaling_config"])
    assert config == expected
    assert config["applications"][0]["args"]["settings"]["gallery"]["num_shards"] == 5


def test_apply_dry_run(kubeconfig, fake_server: FakeServer, rendered, capsys):
    serve_discovery(fake_server)
    for manifest in rendered["production"]:
        fake_server.on("PATCH", path_of(manifest), echo_apply)
    assert run("k8s", "apply", "--env", "production", "--dry-run", "--kubeconfig", str(kubeconfig)) == 0
    out = capsys.readouterr().out
    assert "applied (dry run): RayService ufme/ufme" in out
    patches = fake_server.sent("PATCH")
    assert patches and all(r.query["dryRun"] == ["All"] for r in patches)


def test_apply_without_kuberay_exits_1_with_the_reason(kubeconfig, fake_server, capsys):
    assert run("k8s", "apply", "--env", "staging", "--kubeconfig", str(kubeconfig)) == 1
    assert "install the KubeRay operator" in capsys.readouterr().err


def test_status_exit_codes(kubeconfig, fake_server, capsys):
    serve_status(fake_server)
    assert run("k8s", "status", "--kubeconfig", str(kubeconfig)) == 0
    assert "RayService ufme/ufme: READY" in capsys.readouterr().out
    fake_server.on("GET", RS_PATH, (200, rayservice_object(ready=False, app="DEPLOYING")))
    assert run("k8s", "status", "--kubeconfig", str(kubeconfig), "--json") == 1
    assert '"app_status": "DEPLOYING"' in capsys.readouterr().out


def test_wait_ready(kubeconfig, fake_server, capsys):
    serve_status(fake_server)
    assert run("k8s", "wait-ready", "--kubeconfig", str(kubeconfig), "--timeout-s", "5", "--poll-s", "0.01") == 0
    assert "READY" in capsys.readouterr().out


# --- compact -------------------------------------------------------------------------------------


@pytest.fixture
def compaction_env(monkeypatch):
    monkeypatch.setenv("UFME_STORAGE_URI", "s3://ufme-gallery/production?endpoint_override=s3.test:9000")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("UFME_GALLERY__NUM_SHARDS", raising=False)


def test_compact_with_an_unreachable_dashboard(kubeconfig, fake_server, compaction_env, monkeypatch, capsys):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    code = run("k8s", "compact", "--skip-status-check", "--address", f"http://127.0.0.1:{port}", "--no-wait", "--shards", "2")
    assert code == 1
    assert "cannot reach the Ray job server" in capsys.readouterr().err
