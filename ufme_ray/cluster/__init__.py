"""Driving a Ray cluster from outside: token auth, starting and stopping a local head, deploying
the Serve config through the dashboard, waiting for readiness. `provision` strings these together
into `ufme-ray up` / `down`.

Ray >= 2.59 turns token authentication on for new local clusters. `ufme-ray up` makes that
explicit: it generates the token (`~/.ray/auth_token`), starts the head with RAY_AUTH_MODE=token,
and every client (this package, `serve`, `ray job`) must run with RAY_AUTH_MODE=token too.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import yaml

from ufme_ray import serve_transport
from ufme_ray.config import ImageLimits, Ingress, deep_merge
from ufme_ray.serve_config import APP_NAME, GATEWAY_DEPLOYMENT, SHARD_RESOURCE

AUTH_ENV = {"RAY_AUTH_MODE": "token"}
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"
# Its own Ray temp folder: Ray resolves "the local cluster" (for job drivers too) through
# <temp>/ray_current_cluster, so sharing /tmp/ray with another local cluster mixes them up.
LOCAL_TEMP_DIR = Path("/tmp/ufme-ray")


# Serve's HTTP proxy (uvicorn, proxy headers on) takes the client address from X-Forwarded-For only
# when the peer is one of FORWARDED_ALLOW_IPS in its environment, which it inherits from `ray start`;
# unset, uvicorn trusts 127.0.0.1 and ::1, so any local caller could name any client in the audit trail.
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"
# Trusts no host: uvicorn (_TrustedHosts) takes an entry that is neither an IP nor a CIDR for a host
# name, compared only with a peer that is not an IP, and a TCP peer always is. Not "": an empty value
# is too easily taken for unset, and unset means the loopback default.
TRUST_NO_PROXY = "none"


# What KubeRay gives the workers of a GCS fault-tolerant cluster: a worker's raylet waits this long
# for a restarted head before it exits. Ray's default (60 s) is the head's own restart budget, so
# with it the workers could give up before the head is back.
WORKER_GCS_RECONNECT_TIMEOUT_S = 600
# `ray start` leaves this file in its temp folder naming the cluster's GCS address (a worker node's too).
RAY_ADDRESS_FILE = "ray_current_cluster"
CLIENT_SERVER_MODULE = "ray.util.client.server"


@dataclass(frozen=True)
class GcsRedis:
    """GCS fault tolerance: the head's GCS keeps the cluster's metadata (the detached shard actors,
    the Serve controller's checkpoint) in this Redis, so a restarted head takes the cluster back
    with its worker nodes and their shard actors instead of starting an empty one."""

    address: str  # host:port
    password: str | None = field(default=None, repr=False)
    # RAY_external_storage_namespace: the head's keys in Redis, one namespace per cluster sharing
    # the Redis; a restarted head must be given the same one (KubeRay uses the RayCluster's UID).
    namespace: str = "ufme"


def forwarded_allow_ips(trusted_proxies: Sequence[str]) -> str:
    """FORWARDED_ALLOW_IPS for `network.trusted_proxies` (IPs and CIDRs, validated by the settings)."""
    return ",".join(trusted_proxies) or TRUST_NO_PROXY


def cluster_temp_dir() -> Path:
    """The Ray temp folder of the cluster `ufme-ray up` starts: UFME_RAY_TEMP_DIR or /tmp/ufme-ray."""
    return Path(os.environ.get("UFME_RAY_TEMP_DIR", LOCAL_TEMP_DIR))


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says which and why."""


def _ray_cli() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if found is None:
        raise ClusterError("the `ray` command is not installed in this environment")
    return found


def auth_env() -> dict[str, str]:
    """os.environ plus RAY_AUTH_MODE=token, for subprocesses that talk to the cluster."""
    return {**os.environ, **AUTH_ENV}


def ensure_auth_token() -> str:
    """The cluster token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), generated if absent."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", DEFAULT_TOKEN_PATH))
    if not path.exists():
        subprocess.run([_ray_cli(), "get-auth-token", "--generate"], check=True, capture_output=True, env=auth_env())
    token = path.read_text().strip()
    if not token:
        raise ClusterError(f"the Ray auth token file {path} is empty")
    return token


def start_local_head(
    *, num_cpus: int | None, gcs_port: int, dashboard_port: int, metrics_port: int, agent_port: int,
    temp_dir: Path | None = None, trusted_proxies: Sequence[str] = (), redis: GcsRedis | None = None,
    image_limits: ImageLimits | None = None, ingress: Ingress = "serve-proxy",
) -> None:
    """`ray start --head` with token auth and the metrics port Prometheus scrapes (8080 by default).

    The dashboard agent (which runs submitted jobs) gets its own port instead of Ray's fixed
    default 52365, so another local cluster (a test session) can still run jobs beside this one.
    Forwarded headers count only from `trusted_proxies` (`network.trusted_proxies`; none by default).
    With `redis`, the GCS is fault tolerant (Ray's RAY_REDIS_ADDRESS and --redis-password).
    Serve speaks gRPC within `image_limits` (`serve_transport`; the defaults when None) behind `ingress`.
    """
    _check_port_free(gcs_port, "--gcs-port")
    _check_port_free(dashboard_port, "--dashboard-port")
    command = [
        _ray_cli(), "start", "--head", "--disable-usage-stats", f"--port={gcs_port}",
        f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1", f"--metrics-export-port={metrics_port}",
        f"--dashboard-agent-listen-port={agent_port}",
    ]
    if num_cpus is not None:
        command.append(f"--num-cpus={num_cpus}")
    if temp_dir is not None:
        command.append(f"--temp-dir={temp_dir}")
        # A killed head leaves this file behind; with a worker of its cluster on this machine still
        # naming that GCS address, `ray start --head` takes it for a running head and refuses. The
        # GCS port is free (checked above), so the file is stale.
        (temp_dir / RAY_ADDRESS_FILE).unlink(missing_ok=True)
    env = {**_serve_env(image_limits, ingress), **auth_env(), FORWARDED_ALLOW_IPS: forwarded_allow_ips(trusted_proxies)}
    if redis is not None:
        env.update({"RAY_REDIS_ADDRESS": redis.address, "RAY_external_storage_namespace": redis.namespace})
        if redis.password:
            command.append(f"--redis-password={redis.password}")
    _ray_start(command, env, "ray start --head")


def start_worker_node(
    *, gcs_address: str, num_cpus: int, shard_slots: int, metrics_port: int, agent_port: int, temp_dir: Path,
    trusted_proxies: Sequence[str] = (), image_limits: ImageLimits | None = None, ingress: Ingress = "serve-proxy",
) -> None:
    """`ray start --address`: a node of this machine joins the cluster whose GCS is at `gcs_address`,
    offering `num_cpus` CPUs (Serve replicas) and `shard_slots` gallery shard actors (the Ray
    resource the shard actors ask for when `up --shard-nodes` pins them). Its temp folder is its
    own, so `stop_local_ray(temp_dir)` stops this node and nothing else.

    The cluster's token must be here already (RAY_AUTH_TOKEN or the token file): a new one would not
    be the cluster's.
    """
    command = [
        _ray_cli(), "start", f"--address={gcs_address}", "--disable-usage-stats", f"--num-cpus={num_cpus}",
        f"--metrics-export-port={metrics_port}", f"--dashboard-agent-listen-port={agent_port}", f"--temp-dir={temp_dir}",
    ]
    if shard_slots:
        command.append(f"--resources={json.dumps({SHARD_RESOURCE: shard_slots})}")
    env = {
        **_serve_env(image_limits, ingress), **auth_env(), FORWARDED_ALLOW_IPS: forwarded_allow_ips(trusted_proxies),
        "RAY_gcs_rpc_server_reconnect_timeout_s": str(WORKER_GCS_RECONNECT_TIMEOUT_S),
    }
    _ray_start(command, env, "ray start --address")


def _serve_env(image_limits: ImageLimits | None, ingress: Ingress) -> dict[str, str]:
    # Under auth_env (os.environ): a variable the operator set wins, e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=0.
    return serve_transport.node_env(image_limits or ImageLimits(), ingress)


def _ray_start(command: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ClusterError(f"`{what}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def cluster_processes(temp_dir: Path) -> list[psutil.Process]:
    """The processes of the local cluster whose Ray temp folder is `temp_dir`, with their children.

    The head's own processes (GCS, raylet, dashboard, monitors) name the temp folder on their
    command line; workers and agents are the raylet's children. A head's Ray Client server names
    only the GCS address (in the folder's RAY_ADDRESS_FILE, which a worker node's folder holds too),
    and `ray start` leaves it to init, not the raylet.
    """
    folder = str(temp_dir.resolve())
    address_file = temp_dir / RAY_ADDRESS_FILE
    gcs_argument = f"--address={address_file.read_text().strip()}" if address_file.is_file() else None
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # whoever asked is not the cluster
    roots, client_servers = [], []
    for process in psutil.process_iter(["cmdline"]):
        arguments = process.info["cmdline"] or []
        if process.pid in ours:
            continue
        if any(_names_folder(part, folder) for part in arguments):
            roots.append(process)
        elif CLIENT_SERVER_MODULE in arguments and gcs_argument in arguments:
            client_servers.append(process)
    if any(Path(p.info["cmdline"][0]).name == "gcs_server" for p in roots):  # the folder is a head's
        roots += client_servers
    found: dict[int, psutil.Process] = {}
    for root in roots:
        for process in [root, *_children(root)]:
            found[process.pid] = process
    return list(found.values())


def _names_folder(argument: str, folder: str) -> bool:
    """`--temp-dir=/tmp/x`, `/tmp/x` or a path inside it; not `/tmp/x-other`."""
    return argument == folder or argument.endswith("=" + folder) or f"{folder}/" in argument


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _check_port_free(port: int, flag: str) -> None:
    """`ray start` on a taken GCS port joins that cluster's storage and fails with a confusing
    session-name assertion: say plainly what is wrong instead."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise ClusterError(f"port {port} is in use (another Ray cluster?): pick another with {flag}")


def stop_local_ray(temp_dir: Path, *, grace_s: float = 10.0) -> int:
    """Stop the local cluster started with `temp_dir` (not `ray stop`, which stops every Ray on
    the machine: a test session or another cluster beside it would die too). Returns how many
    processes were stopped."""
    processes = cluster_processes(temp_dir)
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(processes)


class DashboardClient:
    """The Serve REST API of a cluster's dashboard (what `serve deploy` and `serve status` use)."""

    def __init__(self, address: str, token: str | None, *, timeout_s: float = 30.0):
        self.address = address.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.address, headers=headers, timeout=timeout_s)

    def _check(self, response: httpx.Response, action: str) -> httpx.Response:
        if response.status_code == 401:
            raise ClusterError(
                f"{action}: the cluster at {self.address} refused the auth token (set RAY_AUTH_MODE=token and "
                "use the token the cluster was started with)"
            )
        if response.status_code >= 400:
            raise ClusterError(f"{action}: HTTP {response.status_code} from {self.address}: {response.text[:1000]}")
        return response

    def reachable(self) -> bool:
        try:
            self._http.get("/api/version")
            return True
        except httpx.HTTPError:
            return False

    def wait_reachable(self, *, timeout_s: float) -> None:
        """Poll until the dashboard answers: `ray start --head` may return before it does, and a head
        that reads a GCS fault-tolerant cluster back from Redis starts its dashboard late."""
        deadline = time.monotonic() + timeout_s
        while not self.reachable():
            if time.monotonic() > deadline:
                raise ClusterError(f"the dashboard at {self.address} did not answer within {timeout_s:.0f} s")
            time.sleep(0.5)  # polling interval

    def deploy(self, config: dict[str, Any]) -> None:
        try:
            self._check(self._http.put("/api/serve/applications/", json=config), "deploy")
        except httpx.HTTPError as exc:
            raise ClusterError(f"deploy: cannot reach the dashboard at {self.address}: {exc}") from exc

    def applications(self) -> dict[str, Any]:
        return self._check(self._http.get("/api/serve/applications/"), "status").json()

    def shutdown(self) -> None:
        self._check(self._http.delete("/api/serve/applications/"), "shutdown")

    def deploy_failure(self, app: str = APP_NAME) -> str | None:
        """Why Serve gave up deploying `app` (status DEPLOY_FAILED): each failed deployment's message
        (for a replica that raised, its traceback, whose last line says what), else None."""
        details = self.applications().get("applications", {}).get(app)
        if not details or details.get("status") != "DEPLOY_FAILED":
            return None
        failed = [f"{name}: {deployment.get('message', '')}" for name, deployment in details.get("deployments", {}).items()
                  if deployment.get("status") == "DEPLOY_FAILED"]
        return "\n".join(failed) or details.get("message") or "Serve gave no reason"


def render_serve_config(path: Path, settings: dict[str, Any], live: dict[str, Any] | None = None) -> dict[str, Any]:
    """serve_config.yaml with `settings` merged into the ufme application's args.settings and `live`
    (sections of `LiveConfig`) merged into its Gateway's user_config, key by key.

    The file is the profile; what is merged in replaces its values. `live` matters because a
    user_config outranks the settings on every replica: a threshold the file's user_config pins
    would otherwise shadow the same threshold given in args.settings.
    """
    config = yaml.safe_load(path.read_text())
    rendered = copy.deepcopy(config)
    for app in rendered["applications"]:
        if app["name"] == APP_NAME:
            args = app.setdefault("args", {})
            args["settings"] = deep_merge(args.get("settings") or {}, settings)
            if live:
                deployments = app.setdefault("deployments", [])
                gateway = next((d for d in deployments if d.get("name") == GATEWAY_DEPLOYMENT), None)
                if gateway is None:
                    gateway = {"name": GATEWAY_DEPLOYMENT}
                    deployments.append(gateway)
                gateway["user_config"] = deep_merge(gateway.get("user_config") or {}, live)
    return rendered


def wait_until_ready(url: str, *, timeout_s: float, on_wait=None, deploy_failure=None) -> dict:
    """Poll GET {url}/ready until 200; returns its body. Raises ClusterError with the last answer, or
    at once with the reason `deploy_failure()` (e.g. `DashboardClient.deploy_failure`) gives on a 503."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/ready", timeout=10)
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code == 500:  # the app answered with a bug, not "not yet": waiting won't help
                raise ClusterError(f"the service at {url} fails its readiness check: {last}")
            if response.status_code == 503 and deploy_failure is not None and (reason := deploy_failure()):
                # Serve has stopped retrying: waiting out the timeout would only hide the reason.
                raise ClusterError(f"Serve could not deploy the service at {url}:\n{reason[-2000:]}")
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if on_wait is not None:
            on_wait(last)
        time.sleep(1.0)
    raise ClusterError(f"the service at {url} was not ready after {timeout_s:.0f} s (last: {last})")
