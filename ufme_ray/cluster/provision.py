"""`ufme-ray up` / `down`: the whole sequence that puts the service on a Ray cluster and takes it off.

up: the data folder and its secrets (API keys file, admin key, audit subject key), the Serve config
rendered with this machine's paths, the cluster token, a local head unless an address is given,
the deploy through the dashboard, then GET /ready. down: the Serve applications removed, the local
head (only its own temp folder's processes) stopped. join / leave: a worker node of this machine
(CPUs for replicas, slots for shard actors) joins a cluster, or stops. Progress goes to a callback,
one line a step.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ufme_ray import cluster
from ufme_ray.client import ADMIN_KEY_FILE, KEYS_FILE
from ufme_ray.config import LIVE_SECTIONS, ConfigError, UfmeSettings, deep_merge
from ufme_ray.serve_config import APP_NAME, SHARD_RESOURCE
from ufme_ray.serving.auth import add_key_to_file, write_secret_file

Report = Callable[[str], None]


@dataclass(frozen=True)
class LocalHead:
    """The local Ray head `up` starts (and `down` stops) when no cluster address is given."""

    num_cpus: int | None = None  # None: all of them
    gcs_port: int = 6379
    dashboard_port: int = 8265
    metrics_port: int = 8080  # what Prometheus scrapes
    agent_port: int = 52366  # not Ray's default 52365, so a test cluster beside it can run jobs too
    temp_dir: Path = field(default_factory=cluster.cluster_temp_dir)
    redis: cluster.GcsRedis | None = None  # GCS fault tolerance

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


@dataclass(frozen=True)
class WorkerNode:
    """A worker node of this machine that `join` starts (and `leave` stops)."""

    num_cpus: int = 0  # like KubeRay's shard group: no CPU, so no Serve replica lands there
    shard_slots: int = 1
    metrics_port: int = 8080
    agent_port: int = 52366
    temp_dir: Path = field(default_factory=cluster.cluster_temp_dir)


def find_serve_config(given: Path | None) -> Path:
    """`given`, else ./serve_config.yaml, else the checkout's. Raises ConfigError if none exists."""
    candidates = [given] if given else [Path("serve_config.yaml"), Path(__file__).resolve().parents[2] / "serve_config.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"serve config not found (looked at {', '.join(map(str, candidates))}); pass --serve-config")


def service_settings(settings: UfmeSettings, *, shards: int | None, report: Report) -> dict[str, Any]:
    """The Serve app's settings overrides: every value the settings file, the UFME_* environment
    and the flags of `up` set (secrets included: the replicas need them), with absolute paths of
    this machine, and the data folder's secrets, created on the first `up` (the admin key is
    reported once, then only stored). What none of them set stays the Serve config's, then the
    cluster's, then the default."""
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {
        "model_dir": str(Path(settings.model_dir).resolve()),
        "data_dir": str(data_dir),
        "storage_uri": settings.resolved_storage_uri,
    }
    if settings.model_manifest is not None:
        paths["model_manifest"] = str(settings.model_manifest.resolve())
    if settings.demo_dir is not None:
        paths["demo_dir"] = str(settings.demo_dir.resolve())
    if shards is not None:
        paths["gallery"] = {"num_shards": shards}
    keys_file = Path(settings.auth.keys_file or data_dir / KEYS_FILE).resolve()
    paths["auth"] = {"keys_file": str(keys_file)}
    overrides = deep_merge(settings.explicit_values(), paths)
    audit_key_file = data_dir / "audit-subject.key"
    if settings.audit.subject_key is None and settings.audit.subject_key_file is None:
        if not audit_key_file.exists():
            write_secret_file(audit_key_file, base64.b64encode(os.urandom(32)).decode())
        overrides["audit"] = {**overrides.get("audit", {}), "subject_key_file": str(audit_key_file)}
    elif settings.audit.subject_key_file is not None:
        overrides["audit"] = {**overrides["audit"], "subject_key_file": str(settings.audit.subject_key_file.resolve())}
    admin_key_file = data_dir / ADMIN_KEY_FILE
    if not admin_key_file.exists():
        key = add_key_to_file(keys_file, "admin", "admin")
        write_secret_file(admin_key_file, key)
        report(f"created the admin API key (shown once; stored for the CLI in {admin_key_file}, mode 0600):\n  {key}")
    return overrides


def render_for_up(serve_config: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """The Serve config `up` deploys: `serve_config` (the profile) with `overrides` (`service_settings`)
    in args.settings, and their live sections also in the Gateway's user_config, so a threshold or
    policy the settings file or UFME_* give wins over the profile's user_config as it does over its
    args.settings (docs/SETTINGS.md)."""
    live = {section: overrides[section] for section in LIVE_SECTIONS if section in overrides}
    return cluster.render_serve_config(serve_config, overrides, live)


def pin_shards_to_shard_nodes(config: dict[str, Any]) -> None:
    """Each shard actor asks for one shard slot and no CPU, as on KubeRay (the overlays'
    serve-overrides.yaml): shards run only on nodes that offer slots (`join --shard-slots`), and a
    shard that loses its node restarts on another node with a free slot."""
    for app in config["applications"]:
        if app["name"] == APP_NAME:
            app.setdefault("args", {}).update(shard_num_cpus=0, shard_resources={SHARD_RESOURCE: 1})


def up(
    settings: UfmeSettings,
    *,
    serve_config: Path | None = None,
    head: LocalHead,
    address: str | None = None,
    port: int = 8000,
    shards: int | None = None,
    shard_nodes: bool = False,
    timeout_s: float = 600,
    report: Report,
    on_wait: Report | None = None,
) -> str:
    """Deploy the service on the cluster at `address` (default: a new local head) and wait until
    it is ready; returns its URL. `on_wait` gets the last readiness answer once a poll. With
    `shard_nodes`, the shard actors run only on shard nodes (`join`).

    A head with GCS fault tolerance (`head.redis`) that died is taken back by the same `up`: the
    new head reads the cluster from Redis, its worker nodes and their shard actors with it.

    Raises ConfigError (settings, serve config), ClusterError (ray start, deploy, not ready in
    `timeout_s`), OSError (the data folder).
    """
    config = render_for_up(find_serve_config(serve_config), service_settings(settings, shards=shards, report=report))
    config.setdefault("http_options", {})["port"] = port
    if shard_nodes:
        pin_shards_to_shard_nodes(config)
    token = cluster.ensure_auth_token()
    if address is None:
        report(f"starting a local Ray head (token auth on, metrics on port {head.metrics_port}) ...")
        if head.redis is not None:
            report(f"GCS fault tolerance: cluster metadata in Redis at {head.redis.address} (namespace {head.redis.namespace})")
        cluster.start_local_head(
            **{f.name: getattr(head, f.name) for f in dataclasses.fields(head)},
            trusted_proxies=settings.network.trusted_proxies, image_limits=settings.image,
            ingress=settings.network.ingress,
        )
    elif settings.network.trusted_proxies:
        report(f"network.trusted_proxies applies where a node starts: give each node's `ray start` "
               f"{cluster.FORWARDED_ALLOW_IPS}={cluster.forwarded_allow_ips(settings.network.trusted_proxies)}")
    dashboard = address or head.dashboard_url
    client = cluster.DashboardClient(dashboard, token)
    if address is None:
        client.wait_reachable(timeout_s=timeout_s)
    report(f"deploying the Serve application to {dashboard} ...")
    client.deploy(config)
    url = f"http://127.0.0.1:{port}"
    cluster.wait_until_ready(url, timeout_s=timeout_s, on_wait=on_wait, deploy_failure=client.deploy_failure)
    report(f"UFME-Ray is ready at {url} (OpenAPI: {url}/docs)")
    report(f"data: {settings.data_dir.resolve()}   storage: {settings.resolved_storage_uri}")
    if address is None:
        report(f"metrics: http://127.0.0.1:{head.metrics_port}/metrics   dashboard: {dashboard}")
    report("Ray token auth is on: run `export RAY_AUTH_MODE=token` before `serve status` or `ray job submit`.")
    return url


def down(*, head: LocalHead, address: str | None = None, report: Report) -> None:
    """Remove the Serve applications from the cluster at `address` (default: the local head) and,
    for the local head, stop its processes. The gallery stays in its storage.

    Raises ClusterError if the dashboard refuses.
    """
    dashboard = address or head.dashboard_url
    client = cluster.DashboardClient(dashboard, cluster.ensure_auth_token())
    if client.reachable():
        client.shutdown()
        report(f"removed the Serve applications from {dashboard}")
    if address is None:
        stopped = cluster.stop_local_ray(head.temp_dir)
        report(f"stopped the local Ray cluster of {head.temp_dir} ({stopped} processes; the gallery stays in its storage)")
    else:
        report("the shard actors (detached) keep running on that cluster; the next deploy reuses them")


def join(settings: UfmeSettings, *, gcs_address: str, node: WorkerNode, report: Report) -> None:
    """Start a worker node of this machine in the cluster whose GCS is at `gcs_address` (host:port).

    Raises ClusterError if `ray start` fails (the cluster's token missing here, the GCS unreachable).
    """
    report(f"joining the Ray cluster at {gcs_address}: {node.num_cpus} CPUs, {node.shard_slots} shard slots ...")
    cluster.start_worker_node(
        gcs_address=gcs_address, trusted_proxies=settings.network.trusted_proxies, image_limits=settings.image,
        ingress=settings.network.ingress, **{f.name: getattr(node, f.name) for f in dataclasses.fields(node)},
    )
    report(f"joined; `ufme-ray leave --temp-dir {node.temp_dir}` stops this node")


def leave(*, temp_dir: Path, report: Report) -> None:
    """Stop this machine's node of `temp_dir` (its shard actors restart on another shard node)."""
    stopped = cluster.stop_local_ray(temp_dir)
    report(f"stopped the Ray node of {temp_dir} ({stopped} processes)")
