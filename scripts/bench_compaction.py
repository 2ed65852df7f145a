"""Measure the compaction job over several shards: build time, and search latency during the swap.

1. Fill every shard's event log with its share of N enrolments (face-like unit vectors from
   `proving.synthetic`, 1-7 per subject, routed by subject as the service routes them),
   straight through the log.
2. Start a local Ray cluster and run the compaction job's code (`jobs.compact.Compaction`) in this
   driver: the first compaction builds every shard from its log (a full rebuild of N vectors).
3. Start the real shard actors (they restore that epoch), enrol --delta more vectors and delete
   --deletes subjects through them.
4. Search load at a steady rate (--rate probes/s): each probe is searched on every shard and
   the top-k subjects merged, as the Searcher does. Latency is sampled for --before-s seconds,
   then the second compaction (snapshot + log) runs under the same load; requests in flight
   during its swap step are the "during swap" sample.

    python scripts/bench_compaction.py --n 1000000 --shards 5 --dim 512 --task-num-cpus 0.4 --swap-concurrency 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import ray
from tqdm import tqdm

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.synthetic import FaceLikeGallery, subject_id
from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.events import EnrolEvent
from ufme_ray.gallery.object_log import ObjectStoreEventLog
from ufme_ray.gallery.merge import merge_subjects
from ufme_ray.gallery.routing import make_template_id, shard_for
from ufme_ray.gallery.storage import open_storage
from ufme_ray.jobs.compact import Compaction
from ufme_ray.serving.shard_actor import MAX_CONCURRENCY, NAMESPACE, ShardActor, shard_actor_name

BATCH = 4096
TOP_K = 5


def fill_logs(settings: UfmeSettings, gallery: FaceLikeGallery) -> None:
    store = open_storage(settings.resolved_storage_uri)
    shards = settings.gallery.num_shards
    logs = [ObjectStoreEventLog.open(store, shard, settings.gallery.log) for shard in range(shards)]
    counters = [1] * shards
    with tqdm(total=len(gallery), desc="log enrolments", unit="vec") as bar:
        for block in gallery.blocks():
            for start in range(0, len(block.identities), BATCH):
                identities = block.identities[start : start + BATCH]
                batches: list[list[EnrolEvent]] = [[] for _ in range(shards)]
                for identity, vector in zip(identities, block.vectors[start : start + BATCH]):
                    subject = subject_id(int(identity))
                    shard = shard_for(subject, shards)
                    batches[shard].append(
                        EnrolEvent(make_template_id(shard, counters[shard]), subject, vector, 0.9, 0.0)
                    )
                    counters[shard] += 1
                for log, batch in zip(logs, batches):
                    if batch:
                        log.append(batch)
                bar.update(len(identities))
    for log in logs:
        log.close()


def start_shards(settings: UfmeSettings, dim: int) -> list:
    actors = [
        ray.remote(ShardActor)
        .options(name=shard_actor_name(i), namespace=NAMESPACE, max_concurrency=MAX_CONCURRENCY, num_cpus=0)
        .remote(settings.transport_json(), i, dim)
        for i in range(settings.gallery.num_shards)
    ]
    while not all(ray.get(a.ready.remote())["ready"] for a in actors):
        time.sleep(0.5)
    return actors


class SearchLoad:
    """Client threads searching all shards at `rate` probes/s in all; records (start, end) of each."""

    def __init__(self, actors: list, probes: np.ndarray, *, rate: float, threads: int) -> None:
        self._actors = actors
        self._probes = probes
        self._interval_s = threads / rate
        self._stop = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(seed,)) for seed in range(threads)]

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        due = time.monotonic() + rng.uniform(0, self._interval_s)
        while not self._stop.is_set():
            self._stop.wait(max(0.0, due - time.monotonic()))
            due += self._interval_s
            probe = self._probes[rng.integers(len(self._probes))][None]
            started = time.time()
            try:
                per_shard = ray.get([a.search.remote(probe, TOP_K * 4) for a in self._actors])
                merge_subjects((hits[0] for hits in per_shard), TOP_K)
            except ray.exceptions.RayError as exc:
                self.failures.append(repr(exc))
                continue
            self.samples.append((started, time.time()))

    def __enter__(self) -> "SearchLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def latencies_ms(self, start: float, end: float) -> np.ndarray:
        """Latency of the requests in flight at any moment of [start, end]."""
        return np.array([(e - s) * 1000 for s, e in self.samples if s < end and e > start])


def percentiles(latencies: np.ndarray) -> dict:
    if not len(latencies):
        return {"requests": 0}
    return {
        "requests": int(len(latencies)),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "max_ms": round(float(latencies.max()), 2),
    }


def compaction(settings: UfmeSettings, dim: int) -> dict:
    summary = Compaction(settings, dim).run()
    if summary.status != "compacted":
        raise RuntimeError(f"compaction {summary.status}: {summary.error}")
    steps = {name: round(end - start, 2) for name, (start, end) in summary.timeline.items()}
    return {"duration_s": summary.duration_s, "steps_s": steps, "timeline": summary.timeline,
            "vectors_in": summary.vectors_in, "vectors_out": summary.vectors_out,
            "vectors_dropped": summary.vectors_dropped, "kinds": sorted({s["kind"] for s in summary.shards})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="enrolments before the first compaction")
    parser.add_argument("--shards", type=int, default=5)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--delta", type=int, default=20_000, help="enrolments through the shards between compactions")
    parser.add_argument("--deletes", type=int, default=2_000, help="subjects deleted between compactions")
    parser.add_argument("--before-s", type=float, default=20.0, help="search load sampled before the second compaction")
    parser.add_argument("--rate", type=float, default=20.0, help="search probes per second")
    parser.add_argument("--threads", type=int, default=4, help="search client threads")
    parser.add_argument("--task-num-cpus", type=float, default=1.0, help="CPUs per build task (compaction.task_num_cpus)")
    parser.add_argument("--swap-concurrency", type=int, default=1, help="compaction.swap_concurrency; 0: all at once")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (removed at the end)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_compaction.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ufme-bench-compaction-", dir=args.work))
    rng = np.random.default_rng(0)
    settings = UfmeSettings.load(
        storage_uri=(work / "store").as_uri(),
        gallery={"num_shards": args.shards, "log": {"group_commit_max_events": BATCH}},
        compaction={
            "retention_s": 0,
            "work_dir": str(work / "scratch"),
            "task_num_cpus": args.task_num_cpus,
            "swap_concurrency": args.swap_concurrency or None,
        },
    )
    (work / "scratch").mkdir()
    results: dict = {key: getattr(args, key) for key in (
        "n", "shards", "dim", "delta", "deletes", "rate", "task_num_cpus", "swap_concurrency")}
    try:
        started = time.perf_counter()
        gallery = FaceLikeGallery(args.n, args.dim)
        fill_logs(settings, gallery)
        results["log_fill_s"] = round(time.perf_counter() - started, 1)
        ray.init(address="local", namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
        results["cpus"] = ray.cluster_resources()["CPU"]
        results["first_compaction"] = compaction(settings, args.dim)
        print(json.dumps({"first_compaction": results["first_compaction"]["steps_s"]}), flush=True)
        actors = start_shards(settings, args.dim)
        subjects = [subject_id(i) for i in range(gallery.identities)]
        fresh = FaceLikeGallery(args.delta, args.dim, seed=1).vectors()
        for start in range(0, args.delta, 500):
            items = [(f"late-{start + i:09d}", v, 0.9) for i, v in enumerate(fresh[start : start + 500])]
            by_shard: dict[int, list] = {}
            for item in items:
                by_shard.setdefault(shard_for(item[0], args.shards), []).append(item)
            ray.get([actors[s].enrol.remote(batch) for s, batch in by_shard.items()])
        doomed = rng.choice(len(subjects), size=args.deletes, replace=False)
        ray.get([actors[shard_for(subjects[i], args.shards)].delete.remote(subjects[i]) for i in doomed])
        _, probes = gallery.probes(4096)
        with SearchLoad(actors, probes, rate=args.rate, threads=args.threads) as load:
            time.sleep(args.before_s)
            load_start = time.time()
            results["second_compaction"] = second = compaction(settings, args.dim)
            time.sleep(2.0)  # a little load after the swap too
        swap_start, swap_end = second["timeline"]["swap"]
        build_start, build_end = second["timeline"]["build"]
        before = percentiles(load.latencies_ms(load_start - args.before_s, load_start))
        during_swap = percentiles(load.latencies_ms(swap_start, swap_end))
        results["search"] = {
            "before": before,
            "during_build": percentiles(load.latencies_ms(build_start, build_end)),
            "during_swap": during_swap,
            "failures": len(load.failures),
            "p99_ratio_swap_vs_before": round(during_swap["p99_ms"] / before["p99_ms"], 2)
            if during_swap.get("requests") and before.get("requests") else None,
        }
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    for phase in ("first_compaction", "second_compaction"):
        results.get(phase, {}).pop("timeline", None)
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
