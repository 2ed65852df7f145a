"""`ufme-ray k8s …` end to end against the local fake API server (and a fake Ray dashboard for
`compact`): exit codes, output, and what reaches the servers."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.unit.fake_http import FakeServer, ray_job, serve_job_api
from tests.unit.k8s.conftest import echo_apply, secret, serve_discovery
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


def test_compact_submits_the_jobs_entrypoint_with_the_services_settings(kubeconfig, fake_server, fake_dashboard, compaction_env, capsys):
    serve_status(fake_server)  # RayService Ready, serveConfigV2 num_shards 5
    fake_server.on("GET", "/api/v1/namespaces/ufme/secrets/ufme-ray-auth", (200, secret("ray-token-xyz")))
    serve_job_api(fake_dashboard, [])
    code = run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", fake_dashboard.url, "--no-wait", "--slot", "20261121T10Z")
    assert code == 0, capsys.readouterr().err
    (post,) = fake_dashboard.sent("POST", "/api/jobs/")
    assert post.headers["authorization"] == "Bearer ray-token-xyz"
    assert post.body["submission_id"] == "ufme-compact-20261121T10Z"
    argv = shlex.split(post.body["entrypoint"])
    assert argv[:3] == ["python", "-m", "ufme_ray.jobs.compact"]
    assert argv[argv.index("--num-shards") + 1] == "5"  # from the RayService's serveConfigV2
    assert argv[argv.index("--storage-uri") + 1] == "s3://ufme-gallery/production?endpoint_override=s3.test:9000"  # from the pod env
    assert post.body["entrypoint_num_cpus"] == 0
    assert "submitted compaction job ufme-compact-20261121T10Z (5 shards, s3://ufme-gallery/production)" in capsys.readouterr().out
    # Only what the CronJob's Role grants (get rayservices/ufme), plus the token Secret read that
    # the CronJob does not need (its pod has RAY_AUTH_TOKEN).
    assert {(r.method, r.path) for r in fake_server.requests} == {
        ("GET", RS_PATH), ("GET", "/api/v1/namespaces/ufme/secrets/ufme-ray-auth")
    }


def test_compact_finds_the_slots_job_instead_of_starting_another(kubeconfig, fake_server, fake_dashboard, compaction_env, capsys):
    serve_status(fake_server)
    fake_server.on("GET", "/api/v1/namespaces/ufme/secrets/ufme-ray-auth", (200, secret("t")))
    serve_job_api(fake_dashboard, [ray_job("ufme-compact-20261121T10Z", "RUNNING")])
    assert run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", fake_dashboard.url, "--no-wait", "--slot", "20261121T10Z") == 0
    assert fake_dashboard.sent("POST") == []
    assert "found compaction job ufme-compact-20261121T10Z" in capsys.readouterr().out


def test_compact_of_a_slot_that_already_ran_exits_3_and_compacts_nothing(fake_dashboard, compaction_env, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    serve_job_api(fake_dashboard, [ray_job("ufme-compact-20261121T10Z", "SUCCEEDED", end_time=1795259000000)])
    argv = ("k8s", "compact", "--skip-status-check", "--address", fake_dashboard.url, "--shards", "2")
    assert run(*argv, "--slot", "20261121T10Z") == 3
    out, err = capsys.readouterr()
    assert out == "" and fake_dashboard.sent("POST") == []
    assert err.startswith("ufme-ray: error: the compaction of slot 20261121T10Z already ran: job ufme-compact-20261121T10Z ")
    assert "ended SUCCEEDED at 2026-11-21 " in err and "nothing new was compacted" in err and "--now" in err
    # --now compacts in a slot of its own (the UTC second) instead.
    assert run(*argv, "--now", "--no-wait") == 0
    (post,) = fake_dashboard.sent("POST", "/api/jobs/")
    assert re.fullmatch(r"ufme-compact-\d{8}T\d{6}Z", post.body["submission_id"])


def test_a_scheduled_retry_of_a_slot_whose_job_succeeded_is_done_not_failed(fake_dashboard, compaction_env, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    argv = ("k8s", "compact", "--skip-status-check", "--address", fake_dashboard.url, "--shards", "2", "--slot", "20261121T10Z")
    serve_job_api(fake_dashboard, [ray_job("ufme-compact-20261121T10Z", "SUCCEEDED", end_time=1795259000000)])
    assert run(*argv, "--scheduled") == 0
    assert "already SUCCEEDED: the scheduled run is done" in capsys.readouterr().out
    assert fake_dashboard.sent("POST") == []


def test_a_scheduled_retry_of_a_slot_whose_job_failed_still_exits_3(fake_dashboard, compaction_env, monkeypatch, capsys):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    argv = ("k8s", "compact", "--skip-status-check", "--address", fake_dashboard.url, "--shards", "2", "--slot", "20261121T10Z")
    serve_job_api(fake_dashboard, [ray_job("ufme-compact-20261121T10Z", "FAILED", end_time=1795259000000)])
    assert run(*argv, "--scheduled") == 3
    assert "ended FAILED" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rayservice", "reason"),
    [
        (rayservice_object(ready=False, app="DEPLOYING"), "not Ready"),
        (rayservice_object(pending="ufme-new42"), "upgrade to a new RayCluster"),
    ],
)
def test_compact_refuses_while_the_service_is_not_ready_or_upgrading(kubeconfig, fake_server, fake_dashboard, compaction_env, capsys, rayservice, reason):
    serve_status(fake_server, rayservice=rayservice)
    serve_job_api(fake_dashboard, [])
    assert run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", fake_dashboard.url, "--no-wait") == 1
    assert reason in capsys.readouterr().err
    assert fake_dashboard.requests == []


def test_compact_with_an_unreachable_dashboard(kubeconfig, fake_server, compaction_env, monkeypatch, capsys):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    code = run("k8s", "compact", "--skip-status-check", "--address", f"http://127.0.0.1:{port}", "--no-wait", "--shards", "2")
    assert code == 1
    assert "cannot reach the Ray job server" in capsys.readouterr().err
