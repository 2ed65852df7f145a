"""A cluster of nodes as an operator on bare VMs starts it: `ufme-ray up --redis` (GCS fault tolerance,
Ray's RAY_REDIS_ADDRESS / --redis-password / RAY_external_storage_namespace), `ufme-ray join` (a worker
node with shard slots that outwaits a head restart, as KubeRay's workers do) and `up --shard-nodes`
(shard actors only on shard nodes, as the KubeRay overlays pin them)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from ufme_ray import cluster, serve_transport
from ufme_ray.cli import main
from ufme_ray.cluster import ClusterError, DashboardClient, GcsRedis, provision, start_local_head, start_worker_node
from ufme_ray.cluster.provision import pin_shards_to_shard_nodes, render_for_up
from ufme_ray.config import ImageLimits, UfmeSettings
from ufme_ray.serve_config import APP_NAME, SHARD_RESOURCE

PORTS = {"gcs_port": 1, "dashboard_port": 2, "metrics_port": 3, "agent_port": 4}


@pytest.fixture
def ray_start(monkeypatch) -> list[tuple[list[str], dict[str, str]]]:
    """Every `ray start` command with its environment, none run."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(cluster, "_check_port_free", lambda port, flag: None)
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append((command, kwargs["env"]))
                        or subprocess.CompletedProcess(command, 0))
    return calls


def test_a_head_with_redis_keeps_the_cluster_there(ray_start, tmp_path):
    (tmp_path / cluster.RAY_ADDRESS_FILE).write_text("127.0.0.1:1")  # what a killed head leaves behind
    start_local_head(num_cpus=2, **PORTS, temp_dir=tmp_path, redis=GcsRedis("10.0.0.5:6379", "s3cret", "ufme-prod"))
    start_local_head(num_cpus=2, **PORTS, temp_dir=tmp_path)
    (with_redis, with_redis_env), (plain, plain_env) = ray_start
    assert "--redis-password=s3cret" in with_redis and "--head" in with_redis
    assert with_redis_env["RAY_REDIS_ADDRESS"] == "10.0.0.5:6379"
    assert with_redis_env["RAY_external_storage_namespace"] == "ufme-prod"
    assert not any(arg.startswith("--redis") for arg in plain)
    assert "RAY_REDIS_ADDRESS" not in plain_env
    assert not (tmp_path / cluster.RAY_ADDRESS_FILE).exists()
    assert "s3cret" not in repr(GcsRedis("10.0.0.5:6379", "s3cret"))


def test_a_worker_node_offers_shard_slots_and_outwaits_a_head_restart(ray_start, tmp_path):
    start_worker_node(gcs_address="10.0.0.1:6379", num_cpus=0, shard_slots=2, metrics_port=8080, agent_port=52366,
                      temp_dir=tmp_path, trusted_proxies=["10.0.0.0/8"])
    ((command, env),) = ray_start
    assert command[1:3] == ["start", "--address=10.0.0.1:6379"]
    assert "--num-cpus=0" in command and f"--temp-dir={tmp_path}" in command
    assert f"--resources={json.dumps({SHARD_RESOURCE: 2})}" in command
    assert env["RAY_gcs_rpc_server_reconnect_timeout_s"] == str(cluster.WORKER_GCS_RECONNECT_TIMEOUT_S)
    assert env["RAY_AUTH_MODE"] == "token" and env[cluster.FORWARDED_ALLOW_IPS] == "10.0.0.0/8"


def test_every_node_starts_with_serves_grpc_transport_sized_by_the_image_limits(ray_start, tmp_path, monkeypatch):
    limits = ImageLimits(max_pixels=60_000_000)
    start_local_head(num_cpus=2, **PORTS, temp_dir=tmp_path, image_limits=limits)
    start_worker_node(gcs_address="h:1", num_cpus=0, shard_slots=1, metrics_port=1, agent_port=2, temp_dir=tmp_path,
                      image_limits=limits)
    for _, env in ray_start:
        assert env[serve_transport.MESSAGE_LIMIT_ENV] == str(3 * 60_000_000 + 2**20)
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_PROXY_USE_GRPC"] == "1"
    # What the operator set wins: the way back to Ray's own transport.
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    start_local_head(num_cpus=2, **PORTS, temp_dir=tmp_path)
    assert ray_start[-1][1]["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
    assert ray_start[-1][1][serve_transport.MESSAGE_LIMIT_ENV] == str(3 * 40_000_000 + 2**20)


def test_join_sizes_the_transport_by_the_settings_image_limits(ray_start, tmp_path):
    settings = UfmeSettings(data_dir=tmp_path, image={"max_pixels": 50_000_000})
    provision.join(settings, gcs_address="h:1", node=provision.WorkerNode(temp_dir=tmp_path), report=lambda line: None)
    assert ray_start[0][1][serve_transport.MESSAGE_LIMIT_ENV] == str(3 * 50_000_000 + 2**20)


def test_a_failed_ray_start_says_why(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 1, "", "no token"))
    with pytest.raises(ClusterError, match="(?s)`ray start --address` failed:.*no token"):
        start_worker_node(gcs_address="h:1", num_cpus=0, shard_slots=1, metrics_port=1, agent_port=2, temp_dir=tmp_path)


@pytest.fixture
def captured(monkeypatch, tmp_path) -> dict:
    """What the CLI hands to `provision` (nothing is started)."""
    for key in [k for k in os.environ if k.startswith("UFME_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    monkeypatch.setenv("UFME_DATA_DIR", str(tmp_path / "data"))
    seen: dict = {}
    monkeypatch.setattr(provision, "up", lambda settings, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(provision, "join", lambda settings, **kwargs: seen.update(kwargs))
    return seen


def test_up_takes_the_redis_password_from_a_file_or_the_environment_never_the_command_line(captured, tmp_path, monkeypatch):
    password_file = tmp_path / "redis.password"
    password_file.write_text("from-file\n")
    assert main(["up", "--redis", "10.0.0.5:6379", "--redis-password-file", str(password_file), "--shard-nodes"]) == 0
    assert captured["head"].redis == GcsRedis("10.0.0.5:6379", "from-file", "ufme") and captured["shard_nodes"] is True
    monkeypatch.setenv("REDIS_PASSWORD", "from-env")
    assert main(["up", "--redis", "10.0.0.5:6379", "--redis-namespace", "blue"]) == 0
    assert captured["head"].redis == GcsRedis("10.0.0.5:6379", "from-env", "blue") and captured["shard_nodes"] is False
    assert main(["up"]) == 0
    assert captured["head"].redis is None
    assert main(["up", "--redis-password-file", str(password_file)]) == 2


def test_join_starts_a_shard_node(captured, tmp_path):
    assert main(["join", "10.0.0.1:6379", "--shard-slots", "3", "--temp-dir", str(tmp_path / "node")]) == 0
    assert captured["gcs_address"] == "10.0.0.1:6379"
    node = captured["node"]
    assert (node.shard_slots, node.num_cpus, node.temp_dir) == (3, 0, tmp_path / "node")


def ufme_app(config: dict) -> dict:
    return next(app for app in config["applications"] if app["name"] == APP_NAME)


def test_shard_nodes_pin_the_shards_as_the_kuberay_overlays_do():
    config = render_for_up(REPO_ROOT / "serve_config.yaml", {})
    pin_shards_to_shard_nodes(config)
    args = ufme_app(config)["args"]
    for overlay in ("production", "staging"):
        overrides = yaml.safe_load((REPO_ROOT / "kuberay" / "overlays" / overlay / "serve-overrides.yaml").read_text())
        kuberay_args = overrides["applications"][APP_NAME]["args"]
        assert {k: args[k] for k in ("shard_num_cpus", "shard_resources")} == {
            k: kuberay_args[k] for k in ("shard_num_cpus", "shard_resources")}
    rayservice = yaml.safe_load((REPO_ROOT / "kuberay" / "base" / "rayservice.yaml").read_text())
    (shard_group,) = [g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "shard"]
    assert json.loads(json.loads(shard_group["rayStartParams"]["resources"])) == {SHARD_RESOURCE: 1}
    assert rayservice["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["redisAddress"]


def test_waiting_for_a_dashboard_that_never_answers_fails(tmp_path):
    with pytest.raises(ClusterError, match="did not answer within 1 s"):
        DashboardClient("http://127.0.0.1:9", None).wait_reachable(timeout_s=1)


def test_leave_stops_only_its_node(monkeypatch, tmp_path):
    stopped: list[Path] = []
    monkeypatch.setattr(cluster, "stop_local_ray", lambda temp_dir: stopped.append(temp_dir) or 4)
    lines: list[str] = []
    provision.leave(temp_dir=tmp_path / "node-2", report=lines.append)
    assert stopped == [tmp_path / "node-2"] and lines == [f"stopped the Ray node of {tmp_path / 'node-2'} (4 processes)"]
