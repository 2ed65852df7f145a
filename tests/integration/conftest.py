"""One real local Ray cluster and one deployed UFME-Ray service per test session.

The service is deployed exactly as `ufme-ray up` deploys it: serve_config.yaml rendered with the
test's settings, PUT to the dashboard's Serve REST API with the cluster's auth token, then
polled on /ready. Tests talk to it over real HTTP.
"""

from __future__ import annotations

import base64
import copy
import os
import socket
from pathlib import Path

import httpx
import pytest
import ray

from proving.local_head import bare_head
from tests.conftest import REPO_ROOT
from ufme_ray import cluster
from ufme_ray.serving.auth import key_digest, new_key
from ufme_ray.serving.rate_limiter import RATE_LIMITER_NAME
from ufme_ray.serving.sequencer import SEQUENCER_NAME
from ufme_ray.serving.shard_actor import NAMESPACE, shard_actor_name

NUM_SHARDS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ROLES = ("admin", "enrol", "search")
# A search key with a quota (`service.client_for(RATED)`): 2 requests at once, then one per 10 s.
RATED, RATED_QUOTA = "test-rated", {"rate": 0.1, "burst": 2}
SCOPED, SCOPED_GALLERIES = "test-staff-search", ["it-staff"]  # a search key for one gallery only


class Service:
    """The deployed service; `http` sends the admin key, `client_for(role)` another role's."""

    def __init__(self, url: str, dashboard: cluster.DashboardClient, base_config: dict, metrics_port: int,
                 storage_uri: str, keys: dict[str, str]):
        self.url = url
        self.dashboard = dashboard
        self.base_config = base_config
        self.metrics_port = metrics_port
        self.storage_uri = storage_uri
        self.keys = keys
        self.http = self.client_for("admin")

    def client_for(self, role: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def deploy(self, gateway_user_config: dict | None = None) -> None:
        """(Re)deploy; with a user_config only the Gateway's config changes (no replica restart)."""
        config = copy.deepcopy(self.base_config)
        if gateway_user_config is not None:
            app = config["applications"][0]
            gateway = next(d for d in app["deployments"] if d["name"] == "Gateway")
            gateway["user_config"] = gateway_user_config
        self.dashboard.deploy(config)

    def wait_ready(self, timeout_s: float = 300) -> dict:
        return cluster.wait_until_ready(self.url, timeout_s=timeout_s)

    def gateway_user_config(self) -> dict:
        app = self.base_config["applications"][0]
        return copy.deepcopy(next(d for d in app["deployments"] if d["name"] == "Gateway")["user_config"])

    def shard(self, index: int):
        return ray.get_actor(shard_actor_name(index), namespace=NAMESPACE)


@pytest.fixture(scope="session")
def ray_session():
    """A fresh local cluster (2 CPUs) with its own temp folder and ports, even beside `ufme-ray up`'s
    or another test session's (`proving.local_head`), this process its driver."""
    with bare_head(num_cpus=2, prefix="ufme-rt-") as head:
        ray.init(address=head.address, namespace=NAMESPACE, log_to_driver=False)  # RAY_AUTH_MODE: tests/conftest.py
        try:
            yield {"dashboard": head.dashboard_url, "metrics_port": head.metrics_port, "gcs_port": head.gcs_port,
                   "temp_dir": head.temp_dir}
        finally:
            ray.shutdown()


@pytest.fixture(scope="session")
def service(ray_session, model_dir: Path, faces_dir: Path, tmp_path_factory) -> Service:
    data_dir = tmp_path_factory.mktemp("service-data")
    storage_uri = (data_dir / "store").as_uri()
    port = free_port()
    keys = {role: new_key(f"test-{role}") for role in ROLES}
    keys[RATED] = new_key(RATED)
    rated_key = {"id": RATED, "role": "search", "sha256": key_digest(keys[RATED]), **RATED_QUOTA}
    keys[SCOPED] = new_key(SCOPED)
    scoped_key = {"id": SCOPED, "role": "search", "sha256": key_digest(keys[SCOPED]), "galleries": SCOPED_GALLERIES}
    config = cluster.render_serve_config(
        REPO_ROOT / "serve_config.yaml",
        {
            "model_dir": str(model_dir),
            "data_dir": str(data_dir),
            "storage_uri": storage_uri,
            "demo_dir": str(faces_dir / "lfw"),
            "gallery": {"num_shards": NUM_SHARDS},
            "auth": {"keys": [{"id": f"test-{role}", "role": role, "sha256": key_digest(keys[role])} for role in ROLES] + [rated_key, scoped_key]},
            "audit": {"subject_key": base64.b64encode(os.urandom(32)).decode()},
        },
    )
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    dashboard = cluster.DashboardClient(ray_session["dashboard"], cluster.ensure_auth_token())
    svc = Service(f"http://127.0.0.1:{port}", dashboard, config, ray_session["metrics_port"], storage_uri, keys)
    svc.deploy()
    svc.wait_ready()
    yield svc
    dashboard.shutdown()
    detached = [shard_actor_name(index) for index in range(NUM_SHARDS)] + [SEQUENCER_NAME, RATE_LIMITER_NAME]
    for name in detached:
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass


def largest_face(answer: dict) -> dict:
    """The answer for the photo's largest face (press photos often show people behind the subject)."""

    def area(face: dict) -> float:
        x1, y1, x2, y2 = face["face"]["box"]
        return (x2 - x1) * (y2 - y1)

    return max(answer["faces"], key=area)


def lfw_people(faces_dir: Path, count: int) -> list[tuple[str, Path, Path]]:
    """The first `count` LFW identities with two photos or more: (subject id, photo to enrol, photo
    to search with)."""
    found = []
    for folder in sorted((faces_dir / "lfw").iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            found.append((folder.name.lower().replace("_", "-"), photos[0], photos[1]))
    assert len(found) >= count
    return found[:count]
