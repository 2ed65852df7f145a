"""Measure compaction (`gallery.build.compact`) at scale: time and peak memory for N vectors.

Fills one shard's event log in a file:// store with N enrolments (face-like unit vectors, written
straight through the log in group-sized batches), compacts it into a first snapshot, then appends
--delta more enrolments and deletes --deletes subjects and compacts again (snapshot + log ->
live set -> new index). Prints each phase's time, the live counts, and the process's peak RSS.

    python scripts/bench_build.py --n 1000000 --dim 512 --work /tmp/ufme-build
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ufme_ray.config import GallerySettings, LogSettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.events import DeleteEvent, EnrolEvent
from ufme_ray.gallery.object_log import ObjectStoreEventLog
from ufme_ray.gallery.routing import make_template_id
from ufme_ray.gallery.storage import open_storage

BATCH = 4096


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def _enrol(log: ObjectStoreEventLog, first_counter: int, count: int, dim: int, rng: np.random.Generator) -> None:
    centres = rng.standard_normal((max(count // 4, 1), dim), dtype=np.float32)
    with tqdm(total=count, desc="log enrolments", leave=False) as bar:
        for start in range(0, count, BATCH):
            size = min(BATCH, count - start)
            labels = rng.integers(0, len(centres), size=size)
            vectors = centres[labels] + 0.8 * rng.standard_normal((size, dim), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            log.append(
                [
                    EnrolEvent(
                        template_id=make_template_id(0, first_counter + start + i),
                        subject_id=f"subject-{(first_counter + start + i - 1) // 4:09d}",  # 4 templates each
                        vector=vectors[i],
                        quality=0.9,
                        timestamp=0.0,
                    )
                    for i in range(size)
                ]
            )
            bar.update(size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="enrolments before the first compaction")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--delta", type=int, default=50_000, help="enrolments between the two compactions")
    parser.add_argument("--deletes", type=int, default=10_000, help="subjects deleted between them")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (removed at the end)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_build.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    args.work.mkdir(parents=True, exist_ok=True)
    settings = GallerySettings(num_shards=1, log=LogSettings(group_commit_max_events=BATCH))
    store = open_storage((args.work / "store").resolve().as_uri())
    log = ObjectStoreEventLog.open(store, 0, settings.log)
    results: dict[str, float | int] = {"n": args.n, "dim": args.dim, "delta": args.delta, "deletes": args.deletes}
    try:
        start = time.perf_counter()
        _enrol(log, 1, args.n, args.dim, rng)
        results["log_fill_s"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        first = compact(store, num_shards=1, dim=args.dim, settings=settings, work_dir=args.work)
        results["first_compaction_s"] = round(time.perf_counter() - start, 1)
        results["first_rows"] = first.shards[0].count
        results["first_kind"] = first.shards[0].params.kind
        _enrol(log, args.n + 1, args.delta, args.dim, rng)
        log.append([DeleteEvent(subject_id=f"subject-{i:09d}", timestamp=0.0) for i in range(args.deletes)])
        start = time.perf_counter()
        second = compact(store, num_shards=1, dim=args.dim, settings=settings, work_dir=args.work)
        results["second_compaction_s"] = round(time.perf_counter() - start, 1)
        results["second_rows"] = second.shards[0].count
        results["peak_rss_gib"] = round(_peak_rss_gib(), 2)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
