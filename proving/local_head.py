"""A bare local Ray head (no service deployed) on free ports in a temp folder of its own.

Started as `ufme-ray up` starts one (`cluster.start_local_head`: `ray start --head`, token auth, no
trusted proxy, Serve's transport for the ingress given), not with `ray.init()`, because ray.init
cannot move the dashboard agent off its fixed port 52365 and a second cluster on that port cannot
run jobs ("No available agent"). So it runs beside `ufme-ray up`'s cluster or another one of these.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from proving.servers import free_ports
from ufme_ray import cluster
from ufme_ray.config import Ingress


@dataclass(frozen=True)
class BareHead:
    gcs_port: int
    dashboard_port: int
    metrics_port: int
    temp_dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


@contextmanager
def bare_head(*, num_cpus: int = 2, ingress: Ingress = "serve-proxy", prefix: str = "ufme-head-") -> Iterator[BareHead]:
    """Starts the head, yields it, and stops every process of it and removes its folder after.
    A driver that joined it (`ray.init(address=head.address)`) must leave before it stops, or the
    driver waits a minute for its GCS and dies."""
    gcs_port, dashboard_port, metrics_port, agent_port = free_ports(4)
    temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        cluster.ensure_auth_token()
        cluster.start_local_head(
            num_cpus=num_cpus, gcs_port=gcs_port, dashboard_port=dashboard_port, metrics_port=metrics_port,
            agent_port=agent_port, temp_dir=temp_dir, ingress=ingress,
        )
        yield BareHead(gcs_port, dashboard_port, metrics_port, temp_dir)
    finally:
        cluster.stop_local_ray(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
