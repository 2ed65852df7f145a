"""A short open-loop load (the code of scripts/load.py) against the session's service."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from proving.load import LoadConfig, run_load
from proving.load_material import Photo, collect_photos
from proving.ray_processes import alive_actors
from ufme_ray import cluster

pytestmark = pytest.mark.ray

RATE, WARMUP_S, DURATION_S = 2.0, 5.0, 20.0
# Largest RSS growth of any actor process from the end of the warm-up to the end of the 20 s load:
# measured +1.4 % (Detector; the others +0.1 to +1.0 %). The bound catches a gross leak (tens of MB
# over the load's 40 requests), not a slow one: that is the 10-minute runs' criterion
# (proving.load.MEMORY_GROWTH_LIMIT, 5 %).
MAX_GROWTH = 0.10
# Every operation often enough to appear in 40 arrivals (the schedule is fixed by the seed).
MIX = {"identify": 35, "verify": 15, "enrol": 20, "delete": 10, "analyze": 10, "get_subject": 10}
ACTOR_CLASSES = {"ServeController", "ProxyActor", "ShardActor"} | {
    f"ServeReplica:ufme:{name}" for name in ("Gateway", "Detector", "Quality", "Liveness", "Morph", "Embedder", "Searcher")
}


@pytest.fixture(scope="module")
def load_photos(service, faces_dir: Path, tmp_path_factory) -> list[Photo]:
    """8 LFW people enrolled (first photo) under names of this module, erased afterwards; the load
    sends their other photos (verify, identify) and deepface photos of people not enrolled."""
    people = [p for p in sorted((faces_dir / "lfw").iterdir()) if len(list(p.glob("*.jpg"))) >= 4][:8]
    folder = tmp_path_factory.mktemp("load-gallery")
    names = [f"lt-{uuid.uuid4().hex[:6]}-{person.name}" for person in people]
    for person, name in zip(people, names):
        (folder / name).mkdir()
        first = min(person.glob("*.jpg"))
        shutil.copy(first, folder / name / first.name)
    loaded = service.http.post("/api/v1/demo/load", json={"folder": str(folder), "images_per_subject": 1}, timeout=600)
    assert loaded.status_code == 200 and loaded.json()["subjects_enrolled"] >= 6, loaded.text
    photos = [Photo(f"lfw/{person.name}", p.name, p.read_bytes()) for person in people for p in sorted(person.glob("*.jpg"))[1:]]
    photos += collect_photos([faces_dir / "deepface"], per_identity=3)
    yield photos
    for name in names:
        service.http.delete(f"/api/v1/subjects/{name}")


def test_short_open_loop_load(service, load_photos):
    token = cluster.ensure_auth_token()
    config = LoadConfig(
        url=service.url, api_key=service.keys["admin"], dashboard_url=service.dashboard.address, ray_token=token,
        rate=RATE, duration_s=DURATION_S, warmup_s=WARMUP_S, mix=MIX, concurrency=16, memory_every_s=5, timeline_s=5,
    )
    report = asyncio.run(run_load(config, load_photos, progress=False))
    endpoints = report["endpoints"]

    assert endpoints["all"]["errors"] == {}, endpoints
    # Open loop: every scheduled arrival of the window was sent (or, for a delete, had nothing to delete).
    assert endpoints["all"]["requests"] + endpoints["all"]["skipped"] == RATE * DURATION_S
    for operation in MIX:
        assert endpoints[operation]["ok"] > 0, (operation, endpoints[operation])
        assert endpoints[operation]["p99_ms"] is not None
    # The load erased everything it enrolled.
    assert report["gallery_templates"]["after_cleanup"] == report["gallery_templates"]["before"]

    samples = report["memory"]["samples"]
    assert samples[0]["label"] == "start" and samples[-1]["label"] == "end" and len(samples) >= 4
    for sample in (samples[0], samples[-1]):
        assert ACTOR_CLASSES <= {p["class_name"] for p in sample["processes"]}
        assert all(p["rss_bytes"] > 50 * 2**20 for p in sample["processes"]), sample  # a Ray worker holds more
    alive_now = {actor.pid for actor in alive_actors(service.dashboard.address, token)}
    assert alive_now <= {p["pid"] for p in samples[-1]["processes"]}
    compared = [row for row in report["memory"]["growth"] if row["growth"] is not None]
    assert len(compared) >= len(ACTOR_CLASSES)
    # No actor process grows much over 20 s of load after the warm-up: each process's own growth is
    # bounded, and the report's maximum is the largest of them.
    for row in compared:
        assert row["growth"] < MAX_GROWTH, row
    assert report["memory"]["max_growth"] == pytest.approx(max(r["growth"] for r in compared))


def test_gateway_runs_with_the_allocator_settings(service):
    """serve_config.yaml's runtime_env reaches the Gateway's process; without it the Gateway kept
    hundreds of MiB of freed heap after load and grew run after run (docs/PERFORMANCE.md, load)."""
    gateways = [a for a in alive_actors(service.dashboard.address, cluster.ensure_auth_token())
                if a.class_name == "ServeReplica:ufme:Gateway"]
    assert gateways
    for actor in gateways:
        environ = dict(entry.split("=", 1) for entry in Path(f"/proc/{actor.pid}/environ").read_text().split("\0") if "=" in entry)
        assert (environ.get("MALLOC_MMAP_THRESHOLD_"), environ.get("MALLOC_ARENA_MAX")) == ("131072", "2"), actor.name
