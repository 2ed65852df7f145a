"""Scale proof: the real shard actors at 1M and 10M templates, and what 40M/100M at 512-d need.

For each size N in --sizes (dimension --dim), on a private local Ray cluster started here:

1. Fresh file:// storage and the real shard actors (`shard_handles`, --shards of them).
2. Enrol N synthetic face-like templates (`proving.synthetic`: identities with 1-7
   templates each) through `ShardActor.enrol`, routed by `shard_for(subject)`, ENROL_BATCH per
   call and IN_FLIGHT calls per shard, so the log group-commits them. With --compact-every below
   N, compaction runs between stages, as the hourly job would: a shard's delta holds float32
   vectors (growing by doubling) and Python metadata in RAM until compaction folds it in.
3. The enrolled state (the last stage still in the delta, searched exhaustively): memory per
   shard, search latency and recall@1, a shard's restore (snapshot + log replay).
4. Unless --stop-after-enrolment: compaction (`jobs.compact.Compaction`, run in this driver as
   the job runs it; build, commit, swap times), then the compacted state: memory per shard, search
   latency beside plain FAISS in this process over the same snapshots with the same parameters
   (IndexIVFPQ + fp16 IndexRefine per shard, one thread each, merged the same way; the two
   alternate query by query), recall@1 against exact brute force over all N (streamed block by
   block) and identity top-1, a shard's restore. Searches fan out to every shard actor and merge
   as the Searcher does (`search_subjects` per shard, `merge_subjects`; plain FAISS takes
   k = top_k x SUBJECT_SEARCH_WIDTH, the shard's first search, enough with one template per subject). With
   --cold-compaction the shards are stopped while the final compaction builds and started from its
   snapshot afterwards (a cold start), so the build never shares RAM with their delta.
5. Restore = SIGKILL of shard 0's process; Ray restarts it; time until `ready()`, with stats and
   search answers equal to before.
6. Sizing for 40M and 100M templates at 512-d over 5 and 20 shards: arithmetic from the bytes per
   vector measured by a 512-d run of this script; --steady-swap measures the swap peak it uses.
   --report-from prints the tables and the sizing again from saved results.

    python scripts/bench_scale.py --sizes 1000000 --out bench-results/scale_1m.json
    python scripts/bench_scale.py --sizes 1000000 --dim 512 --steady-swap --out bench-results/scale_512.json
    python scripts/bench_scale.py --report-from bench-results/scale_1m.json bench-results/scale_512.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import psutil
import ray
from ray.exceptions import GetTimeoutError, RayActorError
from tqdm import tqdm

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.synthetic import FaceLikeGallery, subject_id
from ufme_ray.config import IndexSettings, UfmeSettings
from ufme_ray.gallery.epochs import read_current, read_manifest
from ufme_ray.gallery.index import choose_params, nprobe_for
from ufme_ray.gallery.merge import Candidate, merge_subjects
from ufme_ray.gallery.routing import shard_for
from ufme_ray.gallery.shard import SUBJECT_SEARCH_WIDTH
from ufme_ray.gallery.shard_types import SearchHit
from ufme_ray.gallery.snapshot import ShardSnapshot, load_shard_snapshot
from ufme_ray.gallery.storage import open_storage
from ufme_ray.jobs.compact import Compaction
from ufme_ray.serving.shard_actor import shard_actor_name, shard_handles

NAMESPACE = "ufme-scale"  # the benchmark's own gallery, never the service's "ufme" actors
ENROL_BATCH = 1024
IN_FLIGHT = 4  # calls per shard: 4 x 1024 events fill one group commit (group_commit_max_events)
QUALITY = 0.9
TOP_K = 5
RESTORE_CHECK_QUERIES = 50
RESTORE_TIMEOUT_S = 900.0
COMPACTION_STEPS = ("lock", "prepare", "build", "commit", "swap", "retention")
BUILD_TASK_TITLE = "ray::ufme-compact-shard-"  # process title of a build task (jobs.build names them)
GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class ScaleRun:
    """One measurement: N templates of dimension dim over `shards` shard actors."""

    size: int
    dim: int
    shards: int
    work_dir: Path  # storage and compaction scratch go under it
    compact_every: int
    queries: int = 500  # compacted state
    enrolled_queries: int = 100  # enrolled state: the delta is searched exhaustively, slow at 10M
    stop_after_enrolment: bool = False  # measure the enrolled state only (when compaction cannot fit)
    cold_compaction: bool = False  # stop the shards for the final compaction, start them from its snapshot
    seed: int = 0
    task_num_cpus: float = 2.0  # per build task: all cores, so builds run one at a time
    exact_max_vectors: int | None = None  # None: the product default (a smaller one forces IVF-PQ in tests)
    steady_swap: bool = False  # compact once more with an empty log: the swap of a same-sized snapshot


class Peaks(dict):
    """Peak RSS by (pid, process title): a Ray worker's title names the actor or task it runs."""

    def of_pid(self, pid: int) -> int:
        return max((peak for (p, _), peak in self.items() if p == pid), default=0)

    def of_title(self, prefix: str) -> int:
        return max((peak for (_, title), peak in self.items() if title.startswith(prefix)), default=0)


class MemoryWatch:
    """Samples RSS of this process and its descendants (the local cluster, its actors and tasks).

    Sums RSS over processes (shared pages count once per process, so an upper bound), keeps the
    peaks per process and title since the last `take_peaks()`, the lowest system-available
    memory, and the 1-minute load average.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.peak_total = 0
        self.min_available = psutil.virtual_memory().available
        self.loads: list[float] = []
        self._peaks = Peaks()
        self._thread = threading.Thread(target=self._run, name="memory-watch", daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self._interval_s):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    rss = process.memory_info().rss
                    title = (process.cmdline() or [process.name()])[0]
                except psutil.Error:
                    continue
                total += rss
                key = (process.pid, title.split("(")[0])  # "ray::ShardActor.search()" -> "ray::ShardActor.search"
                with self._lock:
                    self._peaks[key] = max(self._peaks.get(key, 0), rss)
            with self._lock:
                self.peak_total = max(self.peak_total, total)
                self.min_available = min(self.min_available, psutil.virtual_memory().available)
                self.loads.append(os.getloadavg()[0])

    def take_peaks(self) -> Peaks:
        """The peaks since the last call."""
        with self._lock:
            peaks, self._peaks = self._peaks, Peaks()
        return peaks

    def summary(self) -> dict:
        with self._lock:
            loads = self.loads or [os.getloadavg()[0]]
            return {
                "peak_rss_sum_gib": round(self.peak_total / GIB, 2),
                "min_system_available_gib": round(self.min_available / GIB, 2),
                "load_1m": {"min": min(loads), "mean": round(sum(loads) / len(loads), 2), "max": max(loads)},
            }

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def scale_settings(run: ScaleRun) -> UfmeSettings:
    index = {} if run.exact_max_vectors is None else {"exact_max_vectors": run.exact_max_vectors}
    return UfmeSettings.load(
        storage_uri=(run.work_dir / "store").as_uri(),
        gallery={"num_shards": run.shards, "index": index},
        compaction={
            "namespace": NAMESPACE,
            "retention_s": 0,  # superseded epochs and compacted log segments go at once: bounded disk
            "work_dir": str(run.work_dir / "scratch"),
            "task_num_cpus": run.task_num_cpus,
        },
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def is_ready(actor) -> bool:
    try:
        return bool(ray.get(actor.ready.remote(), timeout=10)["ready"])
    except (RayActorError, GetTimeoutError):
        return False  # dead, restarting or busy starting


def actor_pid(actor) -> int:
    return ray.get(actor.__ray_call__.remote(lambda _actor: os.getpid()))


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def start_shards(settings: UfmeSettings, dim: int) -> list:
    # num_cpus=0: the actors are threaded and mostly wait on storage or FAISS; the build tasks get the cores.
    actors = shard_handles(settings, dim, num_cpus=0, namespace=NAMESPACE)
    wait_until(lambda: all(is_ready(a) for a in actors), RESTORE_TIMEOUT_S, "the shard actors")
    return actors


def stop_shards(num_shards: int) -> None:
    for shard in range(num_shards):
        try:
            ray.kill(ray.get_actor(shard_actor_name(shard), namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass  # never started


# --- enrolment ---------------------------------------------------------------------------------


def shard_batches(owner: np.ndarray, shards: int) -> list[tuple[int, np.ndarray]]:
    """Each shard's rows in batches of ENROL_BATCH, interleaved so no shard idles while another is fed."""
    batches = []
    for shard in range(shards):
        rows = np.flatnonzero(owner == shard)
        batches += [(shard, rows[i : i + ENROL_BATCH]) for i in range(0, len(rows), ENROL_BATCH)]
    return sorted(batches, key=lambda batch: batch[1][0])


class Enroller:
    """Enrols gallery rows through the shard actors, IN_FLIGHT batches per shard at a time."""

    def __init__(self, actors: list, gallery: FaceLikeGallery) -> None:
        self._actors = actors
        self._gallery = gallery
        self.template_ids = np.zeros(len(gallery), np.int64)  # row -> template id the shard gave it
        self._in_flight: dict[ray.ObjectRef, tuple[int, np.ndarray]] = {}
        self._per_shard = [0] * len(actors)

    def enrol(self, start: int, stop: int, bar: tqdm) -> None:
        shards = len(self._actors)
        for block in self._gallery.blocks(start, stop):
            identities, inverse = np.unique(block.identities, return_inverse=True)
            subjects = [subject_id(int(i)) for i in identities]
            owner = np.array([shard_for(s, shards) for s in subjects])[inverse]
            for shard, rows in shard_batches(owner, shards):
                items = [(subjects[inverse[r]], block.vectors[r], QUALITY) for r in rows]
                self._submit(shard, items, block.start + rows, bar)
        while self._in_flight:
            self._collect_one(bar)

    def _submit(self, shard: int, items: list, rows: np.ndarray, bar: tqdm) -> None:
        while self._per_shard[shard] >= IN_FLIGHT:
            self._collect_one(bar)
        self._in_flight[self._actors[shard].enrol.remote(items)] = (shard, rows)
        self._per_shard[shard] += 1

    def _collect_one(self, bar: tqdm) -> None:
        [done], _ = ray.wait(list(self._in_flight), num_returns=1)
        shard, rows = self._in_flight.pop(done)
        self._per_shard[shard] -= 1
        self.template_ids[rows] = [template_id for template_id, _ in ray.get(done)]
        bar.update(len(rows))


# --- compaction and storage --------------------------------------------------------------------


def compact(settings: UfmeSettings, dim: int, label: str) -> dict:
    """Run the compaction job's code in this driver, showing its steps; its times per step."""
    job = Compaction(settings, dim)
    finished: list = []
    thread = threading.Thread(target=lambda: finished.append(job.run()), name="compaction")
    thread.start()
    with tqdm(total=len(COMPACTION_STEPS), desc=label, unit="step") as bar:
        while thread.is_alive():
            thread.join(0.5)
            bar.update(len(job.summary.timeline) - bar.n)
    [summary] = finished
    return {
        "status": summary.status,
        "error": summary.error,
        "epoch": summary.epoch,
        "duration_s": summary.duration_s,
        "steps_s": {name: round(end - start, 2) for name, (start, end) in summary.timeline.items()},
        "vectors_in": summary.vectors_in,
        "vectors_out": summary.vectors_out,
    }


def compacted(settings: UfmeSettings, dim: int, label: str) -> dict:
    """`compact`, raising unless it compacted."""
    outcome = compact(settings, dim, label)
    if outcome["status"] != "compacted":
        raise RuntimeError(f"{label}: {outcome['status']}: {outcome['error']}")
    return outcome


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def snapshot_part_bytes(settings: UfmeSettings) -> dict[str, int]:
    """Bytes of the current snapshot by part (index, rows.arrow, rerank.faiss, json), all shards."""
    store = open_storage(settings.resolved_storage_uri)
    manifest = read_manifest(store, read_current(store))
    parts: dict[str, int] = {}
    for info in manifest.shards.values():
        for name, part in info.parts.items():
            parts[name] = parts.get(name, 0) + part.size_bytes
    return parts


def load_snapshots(settings: UfmeSettings) -> list[ShardSnapshot]:
    store = open_storage(settings.resolved_storage_uri)
    epoch = read_current(store)
    manifest = read_manifest(store, epoch)
    return [
        load_shard_snapshot(store, epoch, shard, settings.gallery.index, manifest=manifest)
        for shard in range(settings.gallery.num_shards)
    ]


# --- search ------------------------------------------------------------------------------------


def fan_out(actors: list, probe: np.ndarray) -> list[Candidate]:
    """One probe on every shard actor, merged to subjects: the Searcher's search without Serve."""
    per_shard = ray.get([actor.search_subjects.remote(probe[None], TOP_K) for actor in actors])
    return merge_subjects((hits[0] for hits in per_shard), TOP_K)


class PlainShard:
    """One shard's snapshot searched with FAISS directly (no Ray, no Shard): the limit."""

    def __init__(self, snapshot: ShardSnapshot, settings: IndexSettings, k: int) -> None:
        self._snapshot = snapshot  # keeps the FAISS parts alive
        built = snapshot.index
        self._k = k
        if built.rerank is None:
            self._index, self._params = built.index, None
        else:
            self._index = faiss.IndexRefine(built.index, built.rerank)
            ivf = faiss.SearchParametersIVF(nprobe=nprobe_for(built.params.nlist, settings))
            self._params = faiss.IndexRefineSearchParameters(
                k_factor=max(k, settings.rerank_candidates) / k, base_index_params=ivf
            )
            self._params.keep_alive = ivf  # SWIG does not keep nested parameters alive

    def search(self, probe: np.ndarray) -> list[SearchHit]:
        distances, rows = self._index.search(probe[None], self._k, params=self._params)
        scores = distances[0] if self._params is None else 1.0 - distances[0] / 2.0  # L2 on unit vectors -> cosine
        rows = rows[0]
        found = rows >= 0
        subjects = self._snapshot.rows.subject_of_rows(rows[found])
        return [
            SearchHit(int(self._snapshot.index.ids[row]), self._snapshot.rows.subjects[int(code)], float(score))
            for row, code, score in zip(rows[found], subjects, scores[found])
        ]


def plain_fan_out(pool: concurrent.futures.ThreadPoolExecutor, shards: list[PlainShard], probe: np.ndarray) -> list[Candidate]:
    return merge_subjects(pool.map(lambda shard: shard.search(probe), shards), TOP_K)


def percentiles(latencies_ms: list[float]) -> dict:
    values = np.asarray(latencies_ms)
    return {f"p{p}_ms": round(float(np.percentile(values, p)), 2) for p in (50, 95, 99)}


@dataclasses.dataclass(frozen=True)
class Probes:
    """Fresh samples of enrolled identities, with the template id of each one's exact nearest template."""

    identities: np.ndarray
    vectors: np.ndarray
    truth: np.ndarray

    def head(self, count: int) -> Probes:
        return Probes(self.identities[:count], self.vectors[:count], self.truth[:count])


def exact_top1(gallery: FaceLikeGallery, probes: np.ndarray) -> np.ndarray:
    """Row of each probe's exact nearest template (cosine), streaming the gallery block by block."""
    best = np.full(len(probes), -np.inf, np.float32)
    rows = np.zeros(len(probes), np.int64)
    with tqdm(total=len(gallery), desc="exact ground truth", unit="vec") as bar:
        for block in gallery.blocks():
            scores = probes @ block.vectors.T
            top = scores.argmax(axis=1)
            top_scores = scores[np.arange(len(probes)), top]
            better = top_scores > best
            best[better], rows[better] = top_scores[better], block.start + top[better]
            bar.update(len(block.identities))
    return rows


def time_searches(searches: dict[str, Callable[[np.ndarray], list[Candidate]]], probes: Probes) -> dict:
    """Each search path on every probe, alternating which goes first so load changes hit all alike."""
    latency: dict[str, list[float]] = {name: [] for name in searches}
    top1: dict[str, list[Candidate]] = {name: [] for name in searches}
    names = list(searches)
    for number, probe in enumerate(tqdm(probes.vectors, desc="queries", unit="query")):
        for name in names if number % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            answer = searches[name](probe)
            latency[name].append((time.perf_counter() - started) * 1000)
            top1[name].append(answer[0])
    subjects = [subject_id(int(i)) for i in probes.identities]
    return {
        name: {
            **percentiles(latency[name]),
            "recall_at_1": float(np.mean([c.template_id == t for c, t in zip(top1[name], probes.truth)])),
            "identity_top1": float(np.mean([c.subject_id == s for c, s in zip(top1[name], subjects)])),
            "top1_template_ids": [c.template_id for c in top1[name]],
        }
        for name in names
    }


def measure_search(actors: list, probes: Probes, snapshots: list[ShardSnapshot] | None, settings: UfmeSettings) -> dict:
    """The actors' fan-out and, given the snapshots they serve, plain FAISS over them beside it."""
    k = TOP_K * SUBJECT_SEARCH_WIDTH
    searches: dict[str, Callable[[np.ndarray], list[Candidate]]] = {"actors": lambda p: fan_out(actors, p)}
    # One OpenMP thread per shard search, as in an actor (Ray sets OMP_NUM_THREADS=1 there).
    with concurrent.futures.ThreadPoolExecutor(len(actors), initializer=faiss.omp_set_num_threads, initargs=(1,)) as pool:
        if snapshots is not None:
            plain = [PlainShard(s, settings.gallery.index, k) for s in snapshots]
            searches["plain_faiss"] = lambda p: plain_fan_out(pool, plain, p)
        timed = time_searches(searches, probes)
    search = {"queries": len(probes.vectors), "top_k": TOP_K, "k_per_shard": k, **timed}
    if snapshots is not None:
        index = snapshots[0].index.params  # shard 0's (shards differ by a few templates)
        actors_top1, plain_top1 = timed["actors"].pop("top1_template_ids"), timed["plain_faiss"].pop("top1_template_ids")
        search.update({
            "index_kind": index.kind, "nlist": index.nlist,
            "nprobe": nprobe_for(index.nlist, settings.gallery.index) if index.kind == "ivfpq" else 0,
            "rerank_candidates": settings.gallery.index.rerank_candidates,
            "p50_ratio_actors_vs_plain": round(timed["actors"]["p50_ms"] / timed["plain_faiss"]["p50_ms"], 2),
            "actors_equal_plain_top1": float(np.mean(np.equal(actors_top1, plain_top1))),
        })
    else:
        timed["actors"].pop("top1_template_ids")
    return search


# --- memory and restore ------------------------------------------------------------------------


def shard_memory(actors: list, pids: list[int]) -> list[dict]:
    """Per shard: live templates, RSS, and the bytes the shard accounts for by part."""
    memory = []
    for actor, pid in zip(actors, pids):
        stats = ray.get(actor.stats.remote())
        memory.append({"templates": stats["live_templates"], "delta_rows": stats["delta_rows"], "rss": rss(pid),
                       "accounted": stats["resident_bytes"]})
    return memory


def comparable(stats: dict) -> dict:
    """Stats that must survive a restart unchanged (a restart claims a new log writer epoch)."""
    return {key: value for key, value in stats.items() if key != "writer_epoch"}


def same_answers(before: list[list[Candidate]], after: list[list[Candidate]]) -> bool:
    return all(
        [(c.subject_id, c.template_id) for c in b] == [(c.subject_id, c.template_id) for c in a]
        and np.allclose([c.score for c in b], [c.score for c in a], atol=1e-6)
        for b, a in zip(before, after)
    )


def restore_after_kill(actors: list, shard: int, probes: np.ndarray) -> dict:
    """SIGKILL shard `shard`'s process; time until Ray restarted it and it restored its state."""
    actor = actors[shard]
    stats_before = comparable(ray.get(actor.stats.remote()))
    answers_before = [fan_out(actors, p) for p in probes]
    pid = actor_pid(actor)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    answering_s = None
    with tqdm(desc=f"restore shard {shard}", unit="s", bar_format="{desc}: {elapsed}") as bar:
        while True:
            try:
                ready = ray.get(actor.ready.remote(), timeout=10)["ready"]
            except (RayActorError, GetTimeoutError):
                ready = None  # the dead process, or the new one still starting
            if ready is not None and answering_s is None:
                answering_s = time.monotonic() - killed
            if ready:
                break
            if time.monotonic() - killed > RESTORE_TIMEOUT_S:
                raise TimeoutError(f"shard {shard} not restored {RESTORE_TIMEOUT_S:.0f} s after the kill")
            time.sleep(0.05)
            bar.refresh()
    ready_s = time.monotonic() - killed
    new_pid = actor_pid(actor)
    answers_after = [fan_out(actors, p) for p in probes]
    return {
        "shard": shard,
        "killed_pid": pid,
        "new_pid": new_pid,
        "answering_s": round(answering_s, 2),
        "ready_s": round(ready_s, 2),
        "stats_equal": comparable(ray.get(actor.stats.remote())) == stats_before,
        "answers_equal": same_answers(answers_before, answers_after),
        "answers_checked": len(probes),
        "rss_after_restore": rss(new_pid),
    }


def measure_state(actors: list, settings: UfmeSettings, probes: Probes, *, compacted: bool) -> dict:
    """Memory, search and a shard's restore, in the state the shards are in now."""
    pids = [actor_pid(a) for a in actors]
    state = {"memory": shard_memory(actors, pids)}
    if len(probes.vectors):
        state["search"] = measure_search(actors, probes, load_snapshots(settings) if compacted else None, settings)
        state["restore"] = restore_after_kill(actors, 0, probes.vectors[:RESTORE_CHECK_QUERIES])
    return state


# --- one run -----------------------------------------------------------------------------------


def stage_ends(size: int, every: int) -> list[int]:
    return [*range(every, size, every), size]


def enrol_in_stages(run: ScaleRun, settings: UfmeSettings, enroller: Enroller) -> tuple[dict, list[dict], float]:
    """Enrol every template, compacting after each stage but the last; (enrol stats, compactions,
    log bytes per event of the last stage)."""
    enrol_s, compactions, start = 0.0, [], 0
    for stop in stage_ends(run.size, run.compact_every):
        if start:
            compactions.append({"templates": start, **compacted(settings, run.dim, f"compaction at {start:,}")})
        began = time.perf_counter()
        with tqdm(total=run.size, initial=start, desc=f"enrol to {stop:,}x{run.dim}", unit="vec") as bar:
            enroller.enrol(start, stop, bar)
        enrol_s += time.perf_counter() - began
        logged, start = stop - start, stop
    log_bytes = folder_bytes(run.work_dir / "store" / "events")
    return {"seconds": round(enrol_s, 1), "vectors_per_s": round(run.size / enrol_s)}, compactions, log_bytes / logged


def run_scale(run: ScaleRun, watch: MemoryWatch) -> dict:
    """Everything for one size on the connected Ray cluster; the shard actors are gone afterwards.

    Measures the enrolled state (the last stage still in the shards' delta), then, unless
    `run.stop_after_enrolment`, compacts and measures the compacted state. With
    `run.cold_compaction` the shards are stopped while the final compaction builds (the build
    never shares RAM with their delta) and started afterwards from its snapshot: a cold start.
    """
    settings = scale_settings(run)
    (run.work_dir / "scratch").mkdir(parents=True, exist_ok=True)
    gallery = FaceLikeGallery(run.size, run.dim, seed=run.seed)
    result: dict = {"size": run.size, "dim": run.dim, "shards": run.shards, "identities": gallery.identities,
                    "compact_every": run.compact_every, "task_num_cpus": run.task_num_cpus}
    actors = start_shards(settings, run.dim)
    try:
        result["empty_shard_rss"] = [rss(actor_pid(a)) for a in actors]
        enroller = Enroller(actors, gallery)
        result["enrol"], result["compactions"], log_bytes_per_event = enrol_in_stages(run, settings, enroller)
        result["log_bytes_per_event"] = round(log_bytes_per_event, 1)
        identities, vectors = gallery.probes(run.queries, seed=run.seed + 1)
        probes = Probes(identities, vectors, enroller.template_ids[exact_top1(gallery, vectors)])
        result["enrolled"] = measure_state(actors, settings, probes.head(run.enrolled_queries), compacted=False)
        if run.stop_after_enrolment:
            return result
        pids = [actor_pid(a) for a in actors]
        if run.cold_compaction:
            stop_shards(run.shards)
        watch.take_peaks()
        result["final_compaction"] = compact(settings, run.dim, f"compaction at {run.size:,}")
        if result["final_compaction"]["status"] != "compacted":
            return result  # e.g. past the job's deadline: the enrolled state is what was measured
        peaks = watch.take_peaks()
        result["final_compaction_peak_rss"] = {"shards": [peaks.of_pid(p) for p in pids],
                                               "build_task": peaks.of_title(BUILD_TASK_TITLE)}
        if run.cold_compaction:
            started = time.monotonic()
            actors = start_shards(settings, run.dim)
            result["cold_start_s"] = round(time.monotonic() - started, 2)
        parts = snapshot_part_bytes(settings)
        result["snapshot_parts_bytes"] = parts
        result["snapshot_bytes_per_vector"] = round(sum(parts.values()) / run.size, 1)
        result["compacted"] = measure_state(actors, settings, probes, compacted=True)
        if run.steady_swap:
            result["steady_swap"] = steady_swap(actors, settings, run.dim, watch)
        result["per_vector"] = per_vector(result)
    finally:
        stop_shards(run.shards)
    return result


def steady_swap(actors: list, settings: UfmeSettings, dim: int, watch: MemoryWatch) -> dict:
    """Peak RSS of each shard while it swaps from a snapshot to one of the same size (empty delta).

    The steady state of an hourly compaction, and what a shard's machine must hold.
    """
    pids = [actor_pid(a) for a in actors]
    watch.take_peaks()
    compaction = compacted(settings, dim, "steady-state compaction")
    peaks = watch.take_peaks()
    return {"compaction": compaction, "peak_rss": [peaks.of_pid(pid) for pid in pids]}


def per_vector(result: dict) -> dict:
    """Bytes per template, from the measurements of one run (the inputs of the sizing arithmetic)."""
    memory, restored = result["compacted"]["memory"], result["compacted"]["restore"]
    templates = sum(m["templates"] for m in memory)
    shard = restored["shard"]
    restored_rss = restored["rss_after_restore"] - result["empty_shard_rss"][shard]
    largest = max(m["templates"] for m in memory)
    vector = {
        "accounted": {part: round(sum(m["accounted"][part] for m in memory) / templates, 1) for part in memory[0]["accounted"]},
        "rss_after_compaction": round(sum(m["rss"] - b for m, b in zip(memory, result["empty_shard_rss"])) / templates, 1),
        "rss_after_restore": round(restored_rss / memory[shard]["templates"], 1),
        # The rows metadata held in Python (subject strings and their index) and allocator slack:
        # what a freshly restored shard holds beyond the FAISS and numpy parts it accounts for.
        "unaccounted": round((restored_rss - sum(memory[shard]["accounted"].values())) / memory[shard]["templates"], 1),
        "build_peak_rss": round(result["final_compaction_peak_rss"]["build_task"] / largest, 1),
        "log_on_disk": result["log_bytes_per_event"],
        "snapshot_on_disk": result["snapshot_bytes_per_vector"],
        "empty_shard_rss": round(float(np.mean(result["empty_shard_rss"]))),
    }
    if "steady_swap" in result:
        peak = max(p - b for p, b in zip(result["steady_swap"]["peak_rss"], result["empty_shard_rss"]))
        vector["steady_swap_peak_rss"] = round(peak / largest, 1)
    return vector


# --- sizing (arithmetic) -----------------------------------------------------------------------


def shard_ram(n: int, dim: int, vector: dict) -> dict[str, float]:
    """Bytes one shard of n templates holds, by part, from the bytes per vector measured at `dim`.

    The IVF and PQ tables follow the index parameters the product chooses for n. Resident = what a
    restored shard holds. Swap peak: the measured steady-state peak per vector when there is one;
    else, and always for mmap, a model: a swap loads the new snapshot beside the old one and reads
    its index and rerank parts as bytes before FAISS deserialises them, so the resident set twice
    plus those parts once more.
    """
    params = choose_params(n, dim, IndexSettings())
    fixed = vector["empty_shard_rss"]
    codes = n * vector["accounted"]["codes_and_ids"]
    tables = params.nlist * dim * 4 + 256 * dim * 4  # coarse centroids + PQ codebooks (plain PQ codes)
    ids = n * (vector["accounted"]["id_map"] + vector["unaccounted"])
    rerank = n * vector["accounted"]["rerank"]
    resident = fixed + codes + tables + ids + rerank
    resident_mmap = resident - rerank  # rerank vectors memory-mapped from local disk (page cache)
    swap_model = 2 * resident - fixed + codes + rerank
    measured = vector.get("steady_swap_peak_rss")
    return {
        "nlist": params.nlist, "codes_ids": codes, "tables": tables, "ids_metadata": ids, "rerank": rerank,
        "resident": resident, "swap_peak_model": swap_model,
        "swap_peak": fixed + n * measured if measured else swap_model,
        "resident_mmap": resident_mmap, "swap_peak_mmap": 2 * resident_mmap - fixed + codes,
    }


def node_size(peak_bytes: float) -> int:
    """The smallest power-of-two GiB machine with 25% over the peak (OS, Ray, headroom)."""
    return 1 << math.ceil(math.log2(max(peak_bytes * 1.25 / GIB, 1)))


def sizing(measured: dict, *, sizes=(40_000_000, 100_000_000), shard_counts=(5, 20)) -> list[dict]:
    """Per-shard RAM, storage and machine size for larger galleries: arithmetic, not measured."""
    vector, dim = measured["per_vector"], measured["dim"]
    rows = []
    for total in sizes:
        for shards in shard_counts:
            n = math.ceil(total / shards)
            ram = shard_ram(n, dim, vector)
            rows.append({
                "templates": total, "dim": dim, "shards": shards, "per_shard": n, "nlist": ram["nlist"],
                **{f"{part}_gib": round(ram[part] / GIB, 2) for part in (
                    "codes_ids", "tables", "ids_metadata", "rerank", "resident", "swap_peak", "resident_mmap",
                    "swap_peak_mmap")},
                "node_ram_gib": node_size(ram["swap_peak"]),
                "node_ram_mmap_gib": node_size(ram["swap_peak_mmap"]),
                "local_disk_mmap_gb": round(ram["rerank"] / 1e9, 1),
                "build_peak_gib": round(n * vector["build_peak_rss"] / GIB, 2),
                "snapshot_gb": round(total * vector["snapshot_on_disk"] / 1e9, 1),
                "log_gb": round(total * vector["log_on_disk"] / 1e9, 1),
            })
    return rows


def model_check(measured: dict) -> dict | None:
    """The swap-peak model at the measured shard size beside the measured steady-state peak."""
    vector = measured["per_vector"]
    if "steady_swap_peak_rss" not in vector:
        return None
    n = max(m["templates"] for m in measured["compacted"]["memory"])
    ram = shard_ram(n, measured["dim"], vector)
    return {
        "per_shard": n,
        "swap_peak_model_gib": round(ram["swap_peak_model"] / GIB, 2),
        "swap_peak_measured_gib": round(ram["swap_peak"] / GIB, 2),
    }


# --- tables ------------------------------------------------------------------------------------


def states(run: dict, measured: str = "memory") -> list[tuple[str, dict]]:
    """The run's states (enrolled, compacted) in which `measured` was measured."""
    return [(name, run[name]) for name in ("enrolled", "compacted") if measured in run.get(name, {})]


def print_tables(runs: list[dict]) -> None:
    print("\nEnrolment (the shard actors' batch path) and the final compaction (snapshot + the last stage's log)")
    print(f"{'N':>11} {'d':>4} {'shards':>6} {'enrol vec/s':>11} {'compactions':>11} {'build s':>8} {'commit s':>8} "
          f"{'swap s':>7} {'total s':>8}")
    for r in runs:
        line = f"{r['size']:>11,} {r['dim']:>4} {r['shards']:>6} {r['enrol']['vectors_per_s']:>11,} "
        final = r.get("final_compaction", {"status": "not run (--stop-after-enrolment)", "error": None})
        if final["status"] == "compacted":
            steps = final["steps_s"]
            line += (f"{len(r['compactions']) + 1:>11} {steps['build']:>8.1f} {steps['commit']:>8.2f} "
                     f"{steps['swap']:>7.1f} {r['final_compaction']['duration_s']:>8.1f}")
        else:
            line += f"{len(r['compactions']):>11}   final compaction {final['status']}" + (
                f": {final['error']}" if final["error"] else "")
        print(line)
        if "cold_start_s" in r:
            print(f"{'':>11} shards stopped during the final compaction (its swap found none running); all "
                  f"{r['shards']} started from its snapshot, ready in {r['cold_start_s']} s")
    print("\nSingle-query search, top-5 subjects: shard actors fanned out + merged; plain = FAISS in this process "
          "over the same snapshots")
    print(f"{'N':>11} {'d':>4} {'state':>9} {'snapshot':>10} {'delta':>10} {'nlist':>5} {'nprobe':>6} {'queries':>7} "
          f"{'actors p50/p95/p99 ms':>23} {'plain p50/p95/p99 ms':>22} {'ratio':>5} {'R@1':>6} {'plain R@1':>9} "
          f"{'id top1':>7}")
    for r in runs:
        for name, state in states(r, "search"):
            s, a = state["search"], state["search"]["actors"]
            rows = sum(m["templates"] - m["delta_rows"] for m in state["memory"])
            delta = sum(m["delta_rows"] for m in state["memory"])
            line = (f"{r['size']:>11,} {r['dim']:>4} {name:>9} {rows:>10,} {delta:>10,} {s.get('nlist', '-'):>5} "
                    f"{s.get('nprobe', '-'):>6} {s['queries']:>7} "
                    f"{a['p50_ms']:>7.1f}/{a['p95_ms']:>6.1f}/{a['p99_ms']:>6.1f}   ")
            if "plain_faiss" in s:
                p = s["plain_faiss"]
                line += (f"{p['p50_ms']:>6.1f}/{p['p95_ms']:>6.1f}/{p['p99_ms']:>6.1f}  "
                         f"{s['p50_ratio_actors_vs_plain']:>5.2f} {a['recall_at_1']:>6.3f} {p['recall_at_1']:>9.3f} ")
            else:
                line += f"{'-':>20}  {'-':>5} {a['recall_at_1']:>6.3f} {'-':>9} "
            print(line + f"{a['identity_top1']:>7.3f}")
    print("\nMemory per shard actor (B/vec = bytes per template; accounted = what the shard reports by part)")
    print(f"{'N':>11} {'d':>4} {'state':>9} {'shard':>5} {'templates':>10} {'RSS GiB':>8} {'empty GiB':>9} "
          f"{'B/vec RSS':>9} {'codes+ids':>9} {'rerank':>6} {'idmap':>5} {'delta':>6} {'swap peak GiB':>13}")
    for r in runs:
        for name, state in states(r):
            peaks = r["final_compaction_peak_rss"]["shards"] if name == "compacted" else [0] * r["shards"]
            for shard, (m, empty, peak) in enumerate(zip(state["memory"], r["empty_shard_rss"], peaks)):
                acc = {part: value / m["templates"] for part, value in m["accounted"].items()}
                print(f"{r['size']:>11,} {r['dim']:>4} {name:>9} {shard:>5} {m['templates']:>10,} "
                      f"{m['rss'] / GIB:>8.2f} {empty / GIB:>9.2f} {(m['rss'] - empty) / m['templates']:>9.1f} "
                      f"{acc['codes_and_ids']:>9.1f} {acc['rerank']:>6.0f} {acc['id_map']:>5.1f} {acc['delta']:>6.0f} "
                      + (f"{peak / GIB:>13.2f}" if peak else f"{'-':>13}"))
    print("(swap peak = highest RSS sampled during the final compaction; delta = float32 capacity of the delta "
          "per template)")
    print("\nDisk and restore: shard 0 SIGKILLed, Ray restarts it, it reloads (snapshot +) log")
    print(f"{'N':>11} {'d':>4} {'state':>9} {'log B/event':>11} {'snapshot B/vec':>14} {'answering s':>11} "
          f"{'ready s':>7} {'stats equal':>11} {'answers equal':>13} {'RSS after GiB':>13}")
    for r in runs:
        for name, state in states(r, "restore"):
            x = state["restore"]
            snapshot = f"{r['snapshot_bytes_per_vector']:>14.1f}" if name == "compacted" else f"{'-':>14}"
            print(f"{r['size']:>11,} {r['dim']:>4} {name:>9} {r['log_bytes_per_event']:>11.1f} {snapshot} "
                  f"{x['answering_s']:>11.2f} {x['ready_s']:>7.2f} {x['stats_equal']!s:>11} "
                  f"{x['answers_equal']!s:>13} {x['rss_after_restore'] / GIB:>13.2f}")
    for r in runs:
        if "per_vector" in r:
            v = r["per_vector"]
            print(f"{r['size']:,}x{r['dim']} per template after compaction: RSS {v['rss_after_compaction']} B "
                  f"(restored shard {v['rss_after_restore']} B, of which {v['unaccounted']} B rows metadata and "
                  f"allocator slack beyond the accounted parts); build task peak {v['build_peak_rss']} B")


def print_sizing(rows: list[dict], source: str, check: dict | None) -> None:
    print(f"\nSizing by ARITHMETIC (not measured) from the bytes per vector measured in {source}; GiB per shard")
    print(f"{'templates':>11} {'d':>4} {'shards':>6} {'per shard':>10} {'nlist':>5} {'codes+ids':>9} {'tables':>6} "
          f"{'ids+meta':>8} {'rerank':>6} | {'resident':>8} {'swap peak':>9} {'node':>4} | "
          f"{'mmap resident':>13} {'swap peak':>9} {'node':>4} {'disk GB':>7} | {'build peak':>10} | "
          f"{'snapshot GB':>11} {'log GB':>6}")
    for r in rows:
        print(f"{r['templates']:>11,} {r['dim']:>4} {r['shards']:>6} {r['per_shard']:>10,} {r['nlist']:>5} "
              f"{r['codes_ids_gib']:>9.2f} {r['tables_gib']:>6.2f} {r['ids_metadata_gib']:>8.2f} {r['rerank_gib']:>6.2f} | "
              f"{r['resident_gib']:>8.2f} {r['swap_peak_gib']:>9.2f} {r['node_ram_gib']:>4} | "
              f"{r['resident_mmap_gib']:>13.2f} {r['swap_peak_mmap_gib']:>9.2f} {r['node_ram_mmap_gib']:>4} "
              f"{r['local_disk_mmap_gb']:>7.1f} | {r['build_peak_gib']:>10.2f} | {r['snapshot_gb']:>11.1f} {r['log_gb']:>6.1f}")
    print("node = smallest power-of-two GiB machine with 25% over the swap peak, one shard per node; mmap = rerank "
          "vectors memory-mapped from local disk (page cache on top); build peak = one compaction build task; "
          "snapshot = one epoch (a superseded one is kept for retention_s); log = N events before compaction")
    if check:
        print(f"swap peak (RAM rerank) from the measured steady-state swap, {check['swap_peak_measured_gib']:.2f} GiB "
              f"at {check['per_shard']:,} templates; the model used for mmap gives {check['swap_peak_model_gib']:.2f} "
              "there")


# --- command line ------------------------------------------------------------------------------


def environment() -> dict:
    memory = psutil.virtual_memory()
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "ram_gib": round(memory.total / GIB, 1),
        "available_gib_at_start": round(memory.available / GIB, 1),
        "load_at_start": os.getloadavg(),
        "ray": ray.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="gallery sizes N")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--shards", type=int, default=2,
                        help="shard actors (2: the local serve profile's; on 2 cores more shards only add fan-out)")
    parser.add_argument("--compact-every", type=int, default=2_500_000,
                        help="templates enrolled between compactions (bounds the shards' in-RAM delta)")
    parser.add_argument("--queries", type=int, default=500, help="probes for latency and recall@1 once compacted")
    parser.add_argument("--enrolled-queries", type=int, default=100,
                        help="probes before the final compaction (the delta is searched exhaustively); 0: memory only")
    parser.add_argument("--cold-compaction", action="store_true",
                        help="stop the shards during the final compaction and start them from its snapshot after")
    parser.add_argument("--stop-after-enrolment", action="store_true",
                        help="measure the enrolled state only: for a size whose compaction cannot fit this machine")
    parser.add_argument("--steady-swap", action="store_true",
                        help="compact once more with an empty log to measure a steady-state swap (for the sizing model)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private Ray cluster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="parent of the scratch folder (removed at the end)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/scale.json"))
    parser.add_argument("--report-from", type=Path, nargs="+",
                        help="print the tables (and the sizing, given a 512-d run) of saved results; run nothing")
    return parser.parse_args(argv)


def sizing_source(runs: list[dict]) -> dict | None:
    """The largest run at 512-d, the dimension the sizing is for."""
    at_512 = [r for r in runs if r["dim"] == 512 and "per_vector" in r]
    return max(at_512, key=lambda r: r["size"]) if at_512 else None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report_from:
        runs = [run for path in args.report_from for run in json.loads(path.read_text())["runs"]]
        print_tables(runs)
        source = sizing_source(runs)
        if source is not None:
            print_sizing(sizing(source), f"the {source['size']:,}x{source['dim']} run", model_check(source))
        return
    meta = environment()
    ray_temp = tempfile.mkdtemp(prefix="us-", dir="/tmp")  # short: Ray's socket paths have a length limit
    runs: list[dict] = []
    try:
        ray.init(address="local", num_cpus=args.num_cpus, _temp_dir=ray_temp, include_dashboard=False,
                 log_to_driver=False, object_store_memory=512 << 20)
        with MemoryWatch() as watch:
            for size in args.sizes:
                work = Path(tempfile.mkdtemp(prefix="ufme-scale-", dir=args.work))
                try:
                    run = ScaleRun(size=size, dim=args.dim, shards=args.shards, work_dir=work,
                                   compact_every=args.compact_every, queries=args.queries,
                                   enrolled_queries=args.enrolled_queries, seed=args.seed, task_num_cpus=args.num_cpus,
                                   steady_swap=args.steady_swap, stop_after_enrolment=args.stop_after_enrolment,
                                   cold_compaction=args.cold_compaction)
                    runs.append(run_scale(run, watch))
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                print_tables(runs[-1:])
            meta["memory_and_load"] = watch.summary()
    finally:
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)
    meta["load_at_end"] = os.getloadavg()
    print_tables(runs)
    output = {"meta": meta, "runs": runs}
    source = sizing_source(runs)
    if source is not None:
        output["sizing"] = sizing(source)
        output["sizing_model_check"] = model_check(source)
        print_sizing(output["sizing"], "this run", output["sizing_model_check"])
    print(f"\nmemory and load during the run: {json.dumps(meta['memory_and_load'])}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(output, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
