"""Galleries side by side: does a gallery's search pay for the galleries beside it?

Three one-shard stores of synthetic face-like templates (`proving.synthetic`), written straight
to snapshots as a compaction would write them, then opened as the shard actor opens them
(`Shard.open`) and searched as the Searcher asks each shard (`search_subjects`, one probe per
call, top-k subjects, within the named gallery):

- `small-alone`: only the gallery `small` (--small templates);
- `shared`: the gallery `big` (--big templates), `small`, and --many galleries of --many-size
  templates each, all in one shard's snapshot and one IVF-PQ index;
- `big-alone`: only `big`.

Compared in one run, probes alternating between the two stores compared: `small` in
`small-alone` vs in `shared` (target: p50 <= 1.5x), and `big` in `big-alone` vs in `shared`
(target: p50 <= 1.2x, recall@1 against exact brute force over `big` unchanged). Memory and
storage per empty gallery (registry) and per small gallery are measured too.

    python scripts/bench_galleries.py --out bench-results/galleries.json
    python scripts/bench_galleries.py --big 100000 --many 100 --queries 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.synthetic import FaceLikeGallery, subject_id  # noqa: E402
from ufme_ray.config import GallerySettings, LogSettings  # noqa: E402
from ufme_ray.gallery.epochs import publish_current, write_manifest  # noqa: E402
from ufme_ray.gallery.events import GalleryEvent  # noqa: E402
from ufme_ray.gallery.galleries import GalleryRecord, Registry, ShardGalleries, subject_key  # noqa: E402
from ufme_ray.gallery.index import build_index  # noqa: E402
from ufme_ray.gallery.routing import make_template_id  # noqa: E402
from ufme_ray.gallery.shard import Shard  # noqa: E402
from ufme_ray.gallery.snapshot import SnapshotRows, write_shard_snapshot  # noqa: E402
from ufme_ray.gallery.storage import open_storage  # noqa: E402

WARMUP = 20


def build_store(root: Path, members: list[tuple[str, FaceLikeGallery]], settings: GallerySettings, dim: int) -> dict:
    """Write epoch 1 of a one-shard store holding `members` (gallery id, templates); returns its size."""
    store = open_storage(root.as_uri())
    members = sorted(members)
    vectors = np.concatenate([g.vectors() for _, g in members])
    keys: list[str] = []
    starts = [0]
    for gallery_id, gallery in members:
        for block in gallery.blocks():
            identities, counts = np.unique(block.identities, return_counts=True)
            for identity, count in zip(identities.tolist(), counts.tolist()):
                keys.append(subject_key(gallery_id, subject_id(identity)))
                starts.append(starts[-1] + count)
    n = len(vectors)
    ids = np.array([make_template_id(0, i + 1) for i in range(n)], np.int64)
    rows = SnapshotRows(ids, np.full(n, 0.5, np.float32), np.zeros(n), keys, np.array(starts, np.int64))
    registry = Registry(GalleryRecord(g, i + 1, "bench") for i, (g, _) in enumerate(members))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        rerank = Path(work) / "rerank.faiss"
        index = build_index(vectors, ids, settings.index, rerank_path=rerank)
        info = write_shard_snapshot(
            store, 1, 0, index, rows, watermark=0, next_template_counter=n + 1,
            rerank_file=rerank if index.rerank is not None else None, galleries=ShardGalleries(registry=registry),
        )
    write_manifest(store, 1, 1, dim, settings.index, [info])
    publish_current(store, 1)
    return {
        "rows": n,
        "galleries": len(members),
        "index_kind": index.params.kind,
        "build_s": round(time.perf_counter() - started, 1),
        "parts_bytes": {name: part.size_bytes for name, part in info.parts.items()},
    }


def time_pair(label: str, pair: dict[str, tuple[Shard, str]], probes: np.ndarray, top_k: int) -> dict:
    """p50/p95 per store for the same probes, the two stores alternating probe by probe."""
    latencies = {name: [] for name in pair}
    answers = {name: [] for name in pair}
    for i, probe in enumerate(tqdm(probes, desc=label, unit="probe")):
        for name, (shard, gallery) in (pair.items() if i % 2 == 0 else reversed(pair.items())):
            started = time.perf_counter()
            [hits] = shard.search_subjects(probe[None], top_k, [gallery])
            elapsed = (time.perf_counter() - started) * 1000
            if i >= WARMUP:
                latencies[name].append(elapsed)
                answers[name].append(hits[0].subject_id if hits else None)
    return {
        name: {
            "p50_ms": round(float(np.percentile(values, 50)), 3),
            "p95_ms": round(float(np.percentile(values, 95)), 3),
            "probes": len(values),
            "top1": answers[name],
        }
        for name, values in latencies.items()
    }


def exact_top1_subjects(gallery: FaceLikeGallery, gallery_id: str, probes: np.ndarray) -> list[str]:
    best = np.full(len(probes), -np.inf, np.float32)
    identity = np.zeros(len(probes), np.int64)
    for block in gallery.blocks():
        scores = probes @ block.vectors.T
        top = scores.argmax(axis=1)
        top_scores = scores[np.arange(len(probes)), top]
        better = top_scores > best
        best[better], identity[better] = top_scores[better], block.identities[top[better]]
    return [subject_key(gallery_id, subject_id(int(i))) for i in identity]


def registry_cost(count: int, settings: GallerySettings, dim: int, root: Path) -> dict:
    """Memory and storage of `count` empty galleries: registry records in shard 0."""
    store = open_storage(root.as_uri())
    shard = Shard.open(store, 0, 1, dim, settings)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in tqdm(range(count), desc="empty galleries", unit="gallery"):
        shard.change_gallery(GalleryEvent(f"empty-{i:06d}", "create", time.time(), {"description": "", "policy": {}}),
                             max_galleries=count + 1)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    log_bytes = sum(p.stat().st_size for p in (root / "events").rglob("*.seg"))
    registry_json = len(json.dumps(ShardGalleries(registry=Registry(shard.galleries())).to_json()).encode())
    shard.close()
    return {
        "galleries": count,
        "memory_bytes_per_gallery": round(held / count),
        "log_bytes_per_gallery": round(log_bytes / count),
        "snapshot_bytes_per_gallery": round(registry_json / count),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--many", type=int, default=1_000, help="small galleries beside big in the shared store")
    parser.add_argument("--many-size", type=int, default=100, help="templates per one of those galleries")
    parser.add_argument("--empty", type=int, default=10_000, help="empty galleries for the registry's cost")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads (1: one search per core, as in the actors)")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    settings = GallerySettings(num_shards=1, log=LogSettings(group_commit_window_s=0.0))
    big = FaceLikeGallery(args.big, args.dim, seed=1)
    small = FaceLikeGallery(args.small, args.dim, seed=2)
    many = [(f"g{i:05d}", FaceLikeGallery(args.many_size, args.dim, seed=100 + i)) for i in range(args.many)]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-galleries-"))
    load = os.getloadavg()
    stores = {
        "small-alone": [("small", small)],
        "shared": [("big", big), ("small", small), *many],
        "big-alone": [("big", big)],
    }
    built, shards = {}, {}
    for name, members in stores.items():
        print(f"building {name}: {sum(len(g) for _, g in members):,} templates in {len(members)} galleries", flush=True)
        built[name] = build_store(work / name, members, settings, args.dim)
        started = time.perf_counter()
        shards[name] = Shard.open(open_storage((work / name).as_uri()), 0, 1, args.dim, settings)
        built[name]["open_s"] = round(time.perf_counter() - started, 1)
        built[name]["resident_bytes"] = shards[name].stats().resident_bytes

    _, small_probes = small.probes(args.queries + WARMUP, seed=7)
    small_times = time_pair("small gallery", {"small-alone": (shards["small-alone"], "small"), "shared": (shards["shared"], "small")}, small_probes, args.top_k)
    _, big_probes = big.probes(args.queries + WARMUP, seed=8)
    big_times = time_pair("big gallery", {"big-alone": (shards["big-alone"], "big"), "shared": (shards["shared"], "big")}, big_probes, args.top_k)
    truth = exact_top1_subjects(big, "big", big_probes[WARMUP:])
    for result in big_times.values():
        result["recall_at_1"] = round(float(np.mean([a == t for a, t in zip(result.pop("top1"), truth)])), 4)
    small_truth = exact_top1_subjects(small, "small", small_probes[WARMUP:])
    for result in small_times.values():
        result["recall_at_1"] = round(float(np.mean([a == t for a, t in zip(result.pop("top1"), small_truth)])), 4)
    for shard in shards.values():
        shard.close()

    shared, alone = built["shared"]["parts_bytes"], built["big-alone"]["parts_bytes"]
    extra_rows = built["shared"]["rows"] - built["big-alone"]["rows"]
    extra_galleries = args.many + 1
    small_gallery = {
        "templates": args.many_size,
        "storage_bytes_per_gallery": round((sum(shared.values()) - sum(alone.values())) / extra_galleries),
        "storage_bytes_per_template": round((sum(shared.values()) - sum(alone.values())) / extra_rows),
        "resident_bytes_per_gallery": round(
            (sum(built["shared"]["resident_bytes"].values()) - sum(built["big-alone"]["resident_bytes"].values())) / extra_galleries
        ),
    }
    empty = registry_cost(args.empty, settings, args.dim, work / "registry")
    ratios = {
        "small_p50_shared_over_alone": round(small_times["shared"]["p50_ms"] / small_times["small-alone"]["p50_ms"], 2),
        "big_p50_shared_over_alone": round(big_times["shared"]["p50_ms"] / big_times["big-alone"]["p50_ms"], 2),
    }
    load_after = os.getloadavg()
    print(f"\nload average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print(f"{'gallery':<8}{'store':<13}{'p50 ms':>9}{'p95 ms':>9}{'R@1':>8}")
    for label, times in (("small", small_times), ("big", big_times)):
        for store, result in times.items():
            print(f"{label:<8}{store:<13}{result['p50_ms']:>9.3f}{result['p95_ms']:>9.3f}{result['recall_at_1']:>8.4f}")
    print(f"ratios: small shared/alone p50 {ratios['small_p50_shared_over_alone']}x (target <= 1.5), "
          f"big shared/alone p50 {ratios['big_p50_shared_over_alone']}x (target <= 1.2)")
    print(f"empty gallery: {empty['memory_bytes_per_gallery']} B memory, {empty['log_bytes_per_gallery']} B log, "
          f"{empty['snapshot_bytes_per_gallery']} B snapshot; {args.many_size}-template gallery: "
          f"{small_gallery['storage_bytes_per_gallery']} B storage, {small_gallery['resident_bytes_per_gallery']} B resident index")
    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load, "loadavg_after": load_after},
        "stores": built,
        "small": small_times,
        "big": big_times,
        "ratios": ratios,
        "empty_gallery": empty,
        "small_gallery": small_gallery,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
