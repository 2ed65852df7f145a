"""Which OS process runs which Ray actor, and how much memory it holds.

Read from the cluster's dashboard (the state API), so it works from outside the cluster and only
sees that cluster's actors, even when several local clusters share the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import psutil


@dataclass(frozen=True)
class ActorProcess:
    name: str
    class_name: str
    pid: int
    namespace: str


def alive_actors(dashboard_url: str, token: str | None, *, timeout_s: float = 30.0) -> list[ActorProcess]:
    """Every ALIVE actor of the cluster with its worker process id."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"limit": 10000, "detail": "true", "filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE"}
    response = httpx.get(f"{dashboard_url.rstrip('/')}/api/v0/actors", params=params, headers=headers, timeout=timeout_s)
    response.raise_for_status()
    rows = response.json()["data"]["result"]["result"]
    return [
        ActorProcess(name=row.get("name") or row["class_name"], class_name=row["class_name"], pid=int(row["pid"]),
                     namespace=row.get("ray_namespace", ""))
        for row in rows
        if row.get("pid")
    ]


def resident_bytes(pids: list[int]) -> dict[int, int]:
    """RSS of each process that still exists (a process that is gone is left out)."""
    sizes: dict[int, int] = {}
    for pid in pids:
        try:
            sizes[pid] = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return sizes
