"""Resident memory of every Ray actor process of a cluster over a run, and its growth.

A sample lists every ALIVE actor (Serve replicas, proxy, controller, shard actors) with the RSS
of its worker process. Growth compares the first and the last sample process by process; a
process found in only one of them (a replica added or removed by autoscaling, an actor that
restarted under a new pid) is reported, not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from proving.ray_processes import alive_actors, resident_bytes


def sample_memory(dashboard_url: str, token: str | None, *, at_s: float, label: str) -> dict:
    """One JSON-ready sample: `at_s` seconds into the measured window, `label` start/during/end."""
    actors = alive_actors(dashboard_url, token)
    sizes = resident_bytes([actor.pid for actor in actors])
    processes = [
        {"pid": actor.pid, "name": actor.name, "class_name": actor.class_name, "rss_bytes": sizes[actor.pid]}
        for actor in actors
        if actor.pid in sizes
    ]
    return {"at_s": round(at_s, 1), "label": label, "processes": sorted(processes, key=lambda p: p["name"])}


@dataclass(frozen=True)
class ProcessGrowth:
    name: str
    class_name: str
    pid: int
    start_bytes: int | None
    end_bytes: int | None

    @property
    def growth(self) -> float | None:
        """(end - start) / start; None when the process is not in both samples."""
        if self.start_bytes is None or self.end_bytes is None:
            return None
        return (self.end_bytes - self.start_bytes) / self.start_bytes


def memory_growth(start: dict, end: dict) -> list[ProcessGrowth]:
    """Per process (keyed by pid and actor name, so a reused pid is not mistaken for the same actor)."""
    first = {(p["pid"], p["name"]): p for p in start["processes"]}
    last = {(p["pid"], p["name"]): p for p in end["processes"]}
    rows = []
    for key in sorted(first.keys() | last.keys(), key=lambda k: (k[1], k[0])):
        known = first.get(key) or last[key]
        rows.append(ProcessGrowth(
            name=known["name"], class_name=known["class_name"], pid=known["pid"],
            start_bytes=first[key]["rss_bytes"] if key in first else None,
            end_bytes=last[key]["rss_bytes"] if key in last else None,
        ))
    return rows


def max_growth(rows: list[ProcessGrowth]) -> float | None:
    compared = [row.growth for row in rows if row.growth is not None]
    return max(compared) if compared else None
