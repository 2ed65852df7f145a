"""The service on this machine as an operator starts it: `ufme-ray up` / `down`, and for a cluster of
nodes `join` / `leave`, run as subprocesses with one environment.

Each cluster has its own Ray temp folders and ports, so it runs beside others (a test session, a
second harness). With a Redis server, the head has GCS fault tolerance and the gallery shard actors
run on a shard node of their own (`up --shard-nodes`, `join --shard-slots`): a head of Serve replicas
and the GCS, and a worker node holding the shards, which the head-loss and node-loss faults need.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

from proving.redis_server import RedisServer
from proving.servers import free_ports
from ufme_ray import cluster

UFME_RAY = [sys.executable, "-m", "ufme_ray.cli"]
_HEAD_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class HeadPorts:
    port: int  # the service's HTTP port
    gcs_port: int
    dashboard_port: int
    metrics_port: int
    agent_port: int

    @classmethod
    def free(cls) -> "HeadPorts":
        return cls(*free_ports(5))


class LocalService:
    """One local cluster with the service deployed. `redis`: GCS fault tolerance and a shard node
    with `shard_slots` slots (one per gallery shard)."""

    def __init__(self, *, env: dict[str, str], temp_dir: Path, ports: HeadPorts, log_path: Path,
                 redis: RedisServer | None = None, shard_slots: int = 2):
        self.env, self.temp_dir, self.ports, self.log_path = env, temp_dir, ports, log_path
        self.redis, self.shard_slots = redis, shard_slots
        self.url = f"http://127.0.0.1:{ports.port}"
        self.dashboard_url = f"http://127.0.0.1:{ports.dashboard_port}"
        self.shard_node: Path | None = None  # temp folder of the shard node now in the cluster
        self._nodes_started: list[Path] = []

    def _log(self, command: list[str]) -> IO[str]:
        log = self.log_path.open("a")
        log.write(f"\n$ ufme-ray {' '.join(command)}\n")
        log.flush()
        return log

    def _cli(self, *command: str) -> None:
        with self._log(list(command)) as log:
            subprocess.run([*UFME_RAY, *command], env=self.env, stdout=log, stderr=subprocess.STDOUT, check=True)

    def _up_command(self) -> list[str]:
        ports = self.ports
        command = [
            "up", "--temp-dir", str(self.temp_dir), "--port", str(ports.port), "--dashboard-port", str(ports.dashboard_port),
            "--metrics-port", str(ports.metrics_port), "--agent-port", str(ports.agent_port), "--gcs-port", str(ports.gcs_port),
            "--num-cpus", str(os.cpu_count()),
        ]
        if self.redis is not None:
            command += ["--shard-nodes", "--redis", self.redis.address, "--redis-password-file", str(self.redis.password_file),
                        "--redis-namespace", f"ufme-{self.temp_dir.name}"]
        return command

    def up(self) -> None:
        """`ufme-ray up`; the first time on a cluster of nodes, the shard node joins while `up` waits for
        /ready (the shards, and so readiness, need it; it can join only once the head runs). Again after
        a head loss, the same `up` takes the cluster back from Redis, shard node included."""
        if self.redis is None or self.shard_node is not None:
            self._cli(*self._up_command())
            return
        command = self._up_command()
        with self._log(command) as log, subprocess.Popen([*UFME_RAY, *command], env=self.env, stdout=log,
                                                         stderr=subprocess.STDOUT) as first:
            self._wait_for_head(first)
            self.join()
            if first.wait() != 0:
                raise subprocess.CalledProcessError(first.returncode, command)

    def _wait_for_head(self, up: subprocess.Popen) -> None:
        deadline = time.monotonic() + _HEAD_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if up.poll() is not None:
                raise RuntimeError(f"`ufme-ray up` ended ({up.returncode}) before its head ran: see {self.log_path}")
            with socket.socket() as sock:
                # The dashboard comes after the GCS: once it answers, a node can join.
                if sock.connect_ex(("127.0.0.1", self.ports.dashboard_port)) == 0:
                    return
            time.sleep(0.5)  # polling interval
        raise RuntimeError(f"the head of `ufme-ray up` did not start in {_HEAD_START_TIMEOUT_S:.0f} s: see {self.log_path}")

    def down(self) -> None:
        """`ufme-ray down`, and every shard node this service started leaves."""
        try:
            self._cli("down", "--temp-dir", str(self.temp_dir), "--dashboard-port", str(self.ports.dashboard_port))
        finally:
            for node in self._nodes_started:
                self._cli("leave", "--temp-dir", str(node))
            self.shard_node = None

    def join(self) -> None:
        """A new shard node joins (its own temp folder and ports): the first one, or a replacement."""
        node = self.temp_dir.with_name(f"{self.temp_dir.name}-node-{len(self._nodes_started) + 1}")
        metrics_port, agent_port = free_ports(2)
        self._nodes_started.append(node)
        self._cli("join", f"127.0.0.1:{self.ports.gcs_port}", "--shard-slots", str(self.shard_slots), "--temp-dir", str(node),
                  "--metrics-port", str(metrics_port), "--agent-port", str(agent_port))
        self.shard_node = node

    def replace_shard_node(self) -> None:
        """What KubeRay does for a shard pod whose node died: the rest of the old node goes (`leave`:
        whatever outlived its raylet), a new node with the same slots joins."""
        if self.shard_node is not None:
            self._cli("leave", "--temp-dir", str(self.shard_node))
        self.join()

    def head_processes(self) -> list[psutil.Process]:
        """The head's processes: GCS, raylet, dashboard, and the raylet's workers (the Serve replicas)."""
        return cluster.cluster_processes(self.temp_dir)

    def shard_node_raylet(self) -> psutil.Process:
        if self.shard_node is None:
            raise RuntimeError("this service has no shard node")
        raylets = [p for p in cluster.cluster_processes(self.shard_node) if p.name() == "raylet"]
        if len(raylets) != 1:
            raise RuntimeError(f"expected one raylet in {self.shard_node}, found {len(raylets)}")
        return raylets[0]
