"""Compaction as a Ray Job on the session's real cluster, submitted for real.

Two galleries: the deployed service on file:// storage (its shard actors in namespace "ufme",
identify over HTTP with real photos), and real shard actors on the seaweedfs S3 server in a
namespace of their own (the job's --namespace). Jobs run as `ray job submit`, as `ufme-ray
compact`, and through `jobs.submit` (JobSubmissionClient); each test waits for the job to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import ray

from tests.integration.conftest import NUM_SHARDS
from ufme_ray import cluster
from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.epochs import read_current, read_manifest
from ufme_ray.gallery.events import EnrolEvent, GalleryEvent
from ufme_ray.gallery.galleries import subject_key
from ufme_ray.gallery.log_segments import LogReader
from ufme_ray.gallery.manifest import epoch_prefix
from ufme_ray.gallery.merge import merge_subjects
from ufme_ray.gallery.retention import list_epochs
from ufme_ray.gallery.routing import shard_for
from ufme_ray.gallery.snapshot import load_shard_snapshot
from ufme_ray.gallery.storage import ObjectStore, open_storage
from ufme_ray.jobs import lock, submit
from ufme_ray.jobs.compact import SUMMARY_KEY
from ufme_ray.serving.shard_actor import MAX_CONCURRENCY, ShardActor, shard_actor_name

pytestmark = pytest.mark.ray

DIM = 128
TOP_K = 5
S3_NAMESPACE = "ufme-compaction-s3"
# The service holds most of the test cluster's 2 CPUs; the build tasks are tiny here.
TASK_CPUS = 0.1
JOB_TIMEOUT_S = 300
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Gallery:
    """One gallery under compaction: where it is stored, where its shard actors live."""

    name: str
    storage_uri: str
    namespace: str
    env_vars: dict[str, str]  # the job's runtime environment (S3 credentials)
    num_shards: int = NUM_SHARDS

    @property
    def store(self) -> ObjectStore:
        return open_storage(self.storage_uri)

    def settings(self, **compaction) -> UfmeSettings:
        defaults = {"namespace": self.namespace, "retention_s": 0, "task_num_cpus": TASK_CPUS}
        return UfmeSettings.load(
            storage_uri=self.storage_uri,
            gallery={"num_shards": self.num_shards},
            compaction={**defaults, **compaction},
            testing={"fault_injection": True},  # some runs crash or stall the job on purpose
        )

    def actor(self, shard: int):
        return ray.get_actor(shard_actor_name(shard), namespace=self.namespace)

    def owner(self, subject: str):
        return self.actor(shard_for(subject, self.num_shards))

    def enrol(self, subject: str, vectors: np.ndarray) -> list[tuple[int, int]]:
        return ray.get(self.owner(subject).enrol.remote([(subject, v, 0.9) for v in vectors]))

    def delete(self, subject: str) -> list[int]:
        return ray.get(self.owner(subject).delete.remote(subject))

    def templates(self, subject: str) -> list[int]:
        return [t.template_id for t in ray.get(self.owner(subject).templates.remote(subject))]

    def search(self, queries: np.ndarray, top_k: int = TOP_K) -> list[list[tuple[str, float]]]:
        """Subject-level top_k over every shard, as the Searcher merges it."""
        per_shard = ray.get([self.actor(s).search.remote(queries, top_k * 4) for s in range(self.num_shards)])
        return [
            [(c.subject_id, c.score) for c in merge_subjects((hits[q] for hits in per_shard), top_k)]
            for q in range(len(queries))
        ]

    def epochs(self) -> list[int]:
        return [ray.get(self.actor(s).stats.remote())["snapshot_epoch"] for s in range(self.num_shards)]

    def restart_shards(self) -> None:
        for shard in range(self.num_shards):
            ray.kill(self.actor(shard), no_restart=False)
        wait_for(self.all_ready, 120, f"{self.name} shards to restore")

    def all_ready(self) -> bool:
        try:
            return all(ray.get(self.actor(s).ready.remote())["ready"] for s in range(self.num_shards))
        except ray.exceptions.RayError:
            return False


@dataclass
class JobResult:
    submission_id: str
    status: str
    summary: dict | None  # None if the job died before printing it
    logs: str


def summary_of(logs: str) -> dict | None:
    lines = [line for line in logs.splitlines() if line.startswith('{"' + SUMMARY_KEY)]
    return json.loads(lines[-1])[SUMMARY_KEY] if lines else None


@pytest.fixture(scope="module")
def jobs(service):
    return submit.connect(service.dashboard.address, cluster.ensure_auth_token())


def start_job(jobs, gallery: Gallery, **compaction) -> str:
    job = submit.submit(
        jobs, gallery.settings(**compaction), slot=f"test-{uuid.uuid4().hex[:12]}", dim=DIM, env_vars=gallery.env_vars
    )
    assert job.created
    return job.submission_id


def finish_job(jobs, submission_id: str) -> JobResult:
    wait_for(lambda: jobs.get_job_status(submission_id).is_terminal(), JOB_TIMEOUT_S, f"job {submission_id}")
    logs = jobs.get_job_logs(submission_id)
    return JobResult(submission_id, jobs.get_job_status(submission_id).value, summary_of(logs), logs)


def run_job(jobs, gallery: Gallery, **compaction) -> JobResult:
    return finish_job(jobs, start_job(jobs, gallery, **compaction))


def compacted(result: JobResult) -> dict:
    assert result.status == "SUCCEEDED", result.logs[-3000:]
    assert result.summary is not None and result.summary["status"] == "compacted", result.logs[-3000:]
    return result.summary


@pytest.fixture(scope="module")
def file_gallery(service) -> Gallery:
    return Gallery("file", service.storage_uri, "ufme", {})


@pytest.fixture(scope="module")
def s3_gallery(ray_session, s3_storage_uri):
    base, query = s3_storage_uri.split("?", 1)
    uri = f"{base}/compaction-{uuid.uuid4().hex[:8]}?{query}"
    env = {name: os.environ[name] for name in AWS_VARIABLES}
    settings = UfmeSettings.load(storage_uri=uri, gallery={"num_shards": NUM_SHARDS})
    actors = [
        ray.remote(ShardActor)
        .options(
            name=shard_actor_name(i), namespace=S3_NAMESPACE, lifetime="detached", max_restarts=-1,
            max_concurrency=MAX_CONCURRENCY, num_cpus=0.05, runtime_env={"env_vars": env},
        )
        .remote(settings.transport_json(), i, DIM)
        for i in range(NUM_SHARDS)
    ]
    gallery = Gallery("s3", uri, S3_NAMESPACE, env)
    wait_for(gallery.all_ready, 120, "the S3 shard actors")
    yield gallery
    for actor in actors:
        ray.kill(actor, no_restart=True)


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def gallery(request) -> Gallery:
    return request.getfixturevalue(f"{request.param}_gallery")


@pytest.fixture
def names():
    """Subject ids for this test, per gallery; whatever is left of them is deleted afterwards."""
    made: list[tuple[Gallery, str]] = []

    def make(gallery: Gallery, prefix: str, count: int) -> list[str]:
        fresh = [f"{prefix}-{uuid.uuid4().hex[:10]}" for _ in range(count)]
        made.extend((gallery, name) for name in fresh)
        return fresh

    yield make
    ray.get([gallery.owner(name).delete.remote(name) for gallery, name in made])  # concurrent: group-committed


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    return [s for s, _ in got] == [s for s, _ in want] and np.allclose([x for _, x in got], [x for _, x in want], atol=1e-4)


# --- submission paths -----------------------------------------------------------------------


def test_ray_job_submit_cli(service, file_gallery, jobs, names):
    rng = np.random.default_rng(1)
    for name in names(file_gallery, "cli", 4):
        file_gallery.enrol(name, unit(rng, 2))
    submission_id = f"ufme-compact-cli-{uuid.uuid4().hex[:8]}"
    command = [
        str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", service.dashboard.address, "--submission-id", submission_id,
        "--runtime-env-json", json.dumps({"env_vars": {"UFME_COMPACTION__TASK_NUM_CPUS": str(TASK_CPUS)}}),
        "--", "python", "-m", "ufme_ray.jobs.compact",
        "--storage-uri", file_gallery.storage_uri, "--num-shards", str(NUM_SHARDS), "--dim", str(DIM), "--retention-s", "0",
    ]
    done = subprocess.run(command, env=cluster.auth_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert jobs.get_job_status(submission_id).value == "SUCCEEDED"
    summary = summary_of(done.stdout)
    assert summary is not None and summary["status"] == "compacted"
    assert summary["vectors_out"] >= 8 and summary["swapped"] == [0, 1]
    assert read_current(file_gallery.store) == summary["epoch"]
    assert file_gallery.epochs() == [summary["epoch"]] * NUM_SHARDS
    wanted = "ray_ufme_compaction_epoch"

    def exported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10).text
        return any(line.startswith(wanted) and line.endswith(f" {float(summary['epoch'])}") for line in text.splitlines())

    wait_for(exported, 60, "the job's metrics")


def ufme_ray(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ufme_ray.cli", *args], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=JOB_TIMEOUT_S,
    )


def test_ufme_ray_compact_cli_one_job_per_slot(service, file_gallery, jobs):
    env = {
        "UFME_STORAGE_URI": file_gallery.storage_uri,
        "UFME_GALLERY__NUM_SHARDS": str(NUM_SHARDS),
        "UFME_COMPACTION__RETENTION_S": "0",
        "UFME_COMPACTION__TASK_NUM_CPUS": str(TASK_CPUS),
    }
    slot = f"test-{uuid.uuid4().hex[:8]}"
    first = ufme_ray("compact", "--address", service.dashboard.address, "--wait", "--slot", slot, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"submitted compaction job ufme-compact-{slot}" in first.stdout
    assert summary_of(first.stdout)["status"] == "compacted"
    assert first.stdout.rstrip().endswith(f"ufme-compact-{slot}: SUCCEEDED")
    # The slot's job has ended: compacting again in it compacts nothing and says so (exit 3) ...
    again = ufme_ray("compact", "--address", service.dashboard.address, "--wait", "--slot", slot, env=env)
    assert again.returncode == 3 and again.stdout == "", again.stdout[-3000:] + again.stderr[-3000:]
    assert f"the compaction of slot {slot} already ran: job ufme-compact-{slot} ended SUCCEEDED at " in again.stderr
    assert "nothing new was compacted" in again.stderr and "--now" in again.stderr
    assert [j.submission_id for j in jobs.list_jobs()].count(f"ufme-compact-{slot}") == 1
    # ... and --now compacts now, in a slot of its own.
    now = ufme_ray("compact", "--address", service.dashboard.address, "--wait", "--now", env=env)
    assert now.returncode == 0, now.stdout[-3000:] + now.stderr[-3000:]
    assert summary_of(now.stdout)["status"] == "compacted" and now.stdout.rstrip().endswith("SUCCEEDED")
    # A job that fails makes the command fail: here the gallery has 2 shards, not 1.
    wrong = ufme_ray("compact", "--address", service.dashboard.address, "--wait", "--slot", f"{slot}-x", "--shards", "1", env=env)
    assert wrong.returncode == 1 and "GalleryShapeError" in wrong.stdout and "not 1 shards" in wrong.stdout
    assert wrong.stdout.rstrip().endswith("FAILED")


def test_two_concurrent_submissions_compact_once(file_gallery, jobs):
    # Each run builds slowly (fault injection), so the two runs surely meet at the lock.
    ids = [start_job(jobs, file_gallery, delay_commit_s=5) for _ in range(2)]
    results = [finish_job(jobs, submission_id) for submission_id in ids]
    assert [r.status for r in results] == ["SUCCEEDED", "SUCCEEDED"]
    outcomes = sorted(r.summary["status"] for r in results)
    assert outcomes == ["compacted", "skipped"]
    skipped = next(r.summary for r in results if r.summary["status"] == "skipped")
    assert "another compaction holds 'ufme-compaction-lock'" in skipped["error"] and skipped["epoch"] is None


# --- behaviour, on file:// (the service) and on S3 ------------------------------------------


@dataclass
class IdentifyTarget:
    """Probes and how to identify them: over HTTP for the service, through the actors on S3."""

    probes: list
    deletable: str
    identify: Callable[[object, int], list[tuple[str, float]]]


FACE_IDS = ["id02", "id04", "id10", "id11"]  # deepface identities no other test enrols


@pytest.fixture(scope="module")
def face_target(service, faces_dir: Path, tmp_path_factory) -> IdentifyTarget:
    """Real faces enrolled through the service; identify without the liveness gate (stored photos)."""
    folder = tmp_path_factory.mktemp("compaction-faces")
    names = {face_id: f"cmp-{face_id}-{uuid.uuid4().hex[:6]}" for face_id in FACE_IDS}
    probes = []
    for face_id, name in names.items():
        photos = sorted((faces_dir / "deepface" / face_id).glob("*.jpg"))
        (folder / name).mkdir()
        shutil.copy(photos[0], folder / name / photos[0].name)
        probes.append(photos[1])
    loaded = service.http.post("/api/v1/demo/load", json={"folder": str(folder), "images_per_subject": 1}, timeout=600)
    assert loaded.status_code == 200 and loaded.json()["subjects_enrolled"] == len(names), loaded.text
    config = service.gateway_user_config()
    config["gates"]["capture"] = "stored"  # stored photos: liveness does not apply
    service.deploy(config)

    def identify(probe: Path, top_k: int) -> list[tuple[str, float]]:
        response = service.http.post(
            "/api/v1/identify", files={"image": (probe.name, probe.read_bytes(), "image/jpeg")}, data={"top_k": str(top_k)}
        )
        response.raise_for_status()
        faces = response.json()["faces"]
        main = max(faces, key=lambda f: (f["face"]["box"][2] - f["face"]["box"][0]) * (f["face"]["box"][3] - f["face"]["box"][1]))
        if main["decision"]["status"] == "rejected":
            raise AssertionError(f"identify rejected the probe: {main['decision']}")
        return [(c["subject_id"], c["score"]) for c in main["candidates"]]

    def unrestricted() -> bool:
        try:
            identify(probes[0], 1)
        except AssertionError:
            return False
        return True

    wait_for(unrestricted, 120, "the identify gates to change")
    yield IdentifyTarget(probes, names["id04"], identify)
    for name in names.values():
        service.http.delete(f"/api/v1/subjects/{name}")
    service.deploy()


@pytest.fixture
def identify_target(gallery, names, request) -> IdentifyTarget:
    if gallery.name == "file":
        return request.getfixturevalue("face_target")
    rng = np.random.default_rng(7)
    people = names(gallery, "probe", 12)
    centres = unit(rng, len(people))
    for name, centre in zip(people, centres):
        gallery.enrol(name, centre[None])
    probes = list(unit(rng, len(people)) * 0.3 + centres)
    return IdentifyTarget(probes, people[3], lambda probe, top_k: gallery.search(np.asarray(probe)[None], top_k)[0])


def test_identify_during_the_swap_never_fails(gallery, jobs, identify_target):
    target = identify_target
    before = [target.identify(p, TOP_K + 1) for p in target.probes]
    assert any(s == target.deletable for b in before for s, _ in b)
    expected_before = [b[:TOP_K] for b in before]
    expected_after = [[c for c in b if c[0] != target.deletable][:TOP_K] for b in before]
    stop = threading.Event()
    failures: list[str] = []
    answers: list[tuple[float, float, int, list]] = []

    def load() -> None:
        while not stop.is_set():
            for i, probe in enumerate(target.probes):
                started = time.time()
                try:
                    answer = target.identify(probe, TOP_K)
                except Exception as exc:  # any failed request fails the test below
                    failures.append(repr(exc))
                    continue
                answers.append((started, time.time(), i, answer))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        submission_id = start_job(jobs, gallery)
        gallery.delete(target.deletable)  # deleted while the job runs
        summary = compacted(finish_job(jobs, submission_id))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    swap_start, swap_end = summary["timeline"]["swap"]
    assert any(start < swap_end and end > swap_start for start, end, _, _ in answers), "no request overlapped the swap"
    for _, _, i, answer in answers:
        assert same_ranking(answer, expected_before[i]) or same_ranking(answer, expected_after[i]), (answer, i)
    assert gallery.epochs() == [summary["epoch"]] * NUM_SHARDS
    for i, probe in enumerate(target.probes):
        assert same_ranking(target.identify(probe, TOP_K), expected_after[i])


def test_enrolments_and_deletes_during_compaction(gallery, jobs, names):
    rng = np.random.default_rng(3)
    old = names(gallery, "old", 24)  # enrolled before the job
    vectors = {name: unit(rng, 1)[0] for name in old}
    ray.get([gallery.owner(n).enrol.remote([(n, vectors[n], 0.9)]) for n in old])
    early, late = old[:6], old[6:18]  # deleted before the job lists the log / after it built the shards
    acked: dict[str, tuple[list[int], float, int]] = {}  # subject -> (template ids, ack time, seq)
    deleted: set[str] = set()
    stop, built = threading.Event(), threading.Event()
    job: dict = {}

    def write() -> None:
        for name in early:
            gallery.delete(name)
            deleted.add(name)
        fresh: list[str] = []
        while not stop.is_set():
            [name] = names(gallery, "new", 1)
            fresh.append(name)
            vectors[name] = unit(rng, 1)[0]
            [(template_id, seq)] = gallery.enrol(name, vectors[name][None])
            acked[name] = ([template_id], time.time(), seq)
            if len(fresh) % 5 == 0:
                gallery.delete(fresh[-3])  # deletes of delta rows
                deleted.add(fresh[-3])
            if built.is_set() and late[0] not in deleted:
                for gone in late:  # deletes of rows the new snapshot holds, before it is swapped in
                    gallery.delete(gone)
                    deleted.add(gone)
                job["late_deleted_at"] = time.time()

    def watch() -> None:
        # The job logs this once every shard is built (so after each build listed its log) and
        # then waits `delay_commit_s` before it commits and swaps.
        while not stop.is_set() and not built.is_set():
            if "id" in job and "fault injection: waiting" in jobs.get_job_logs(job["id"]):
                built.set()
            time.sleep(0.1)

    threads = [threading.Thread(target=write), threading.Thread(target=watch)]
    for thread in threads:
        thread.start()
    try:
        job["id"] = start_job(jobs, gallery, delay_commit_s=2)  # a slow build: writes go on meanwhile
        summary = compacted(finish_job(jobs, job["id"]))
        swapped = len(acked)
        wait_for(lambda: len(acked) >= swapped + 5, 60, "writes after the swap")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert built.is_set() and job["late_deleted_at"] < summary["timeline"]["swap"][0]
    watermarks = {s["shard"]: s["watermark"] for s in summary["shards"]}
    swap_start = summary["timeline"]["swap"][0]
    in_flight = [n for n, (_, at, seq) in acked.items() if seq > watermarks[shard_for(n, NUM_SHARDS)] and at < swap_start]
    assert len(in_flight) >= 10, "too few enrolments landed between the build's listing and the swap"
    # The late deletes came after the listing: the swap turned them into tombstones over the new snapshot.
    stats = [ray.get(gallery.actor(s).stats.remote()) for s in range(NUM_SHARDS)]
    assert {s["snapshot_epoch"] for s in stats} == {summary["epoch"]}
    assert sum(s["tombstoned_subjects"] for s in stats) >= len(late)
    assert summary["vectors_dropped"] >= len(early)

    def check() -> None:
        for name, (template_ids, _, _) in acked.items():
            assert gallery.templates(name) == ([] if name in deleted else template_ids), name
        alive = [n for n in [*old, *acked] if n not in deleted]
        found = gallery.search(np.stack([vectors[n] for n in alive]), 1)
        assert [hits[0][0] for hits in found] == alive
        returned = {s for hits in gallery.search(np.stack([vectors[n] for n in deleted]), TOP_K) for s, _ in hits}
        assert not returned & deleted

    check()
    gallery.restart_shards()  # the stored state (new snapshot + log after its watermark) agrees
    check()


def test_killed_jobs_leave_the_previous_epoch_live_and_a_rerun_succeeds(gallery, jobs, names, service):
    rng = np.random.default_rng(4)
    people = names(gallery, "kill", 6)
    probes = unit(rng, len(people))
    for name, vector in zip(people, probes):
        gallery.enrol(name, vector[None])
    if read_current(gallery.store) is None:
        compacted(run_job(jobs, gallery))
    previous = read_current(gallery.store)
    expected = gallery.search(probes)
    store = gallery.store

    def still_serving() -> None:
        wait_for(lambda: not lock.is_held(gallery.namespace), 30, "the lock to die with the job")
        for shard in range(NUM_SHARDS):  # the previous epoch is complete: every part passes its checksum
            assert load_shard_snapshot(store, previous, shard, UfmeSettings.load().gallery.index).epoch == previous
        assert all(map(same_ranking, gallery.search(probes), expected))
        if gallery.name == "file":
            assert service.http.get("/ready").status_code == 200

    def kill(step: str) -> int:
        killed = run_job(jobs, gallery, crash_at=step, swap_concurrency=1)  # shards swap one at a time
        assert killed.status == "FAILED" and killed.summary is None
        assert f"killing the job in the middle of step {step}" in killed.logs
        return max(list_epochs(store))

    mid_build = kill("build")
    assert read_current(store) == previous and not store.exists(f"{epoch_prefix(mid_build)}/MANIFEST.json")
    assert gallery.epochs() == [previous] * NUM_SHARDS
    still_serving()

    mid_swap = kill("swap")  # committed, then killed once shard 0 had swapped
    assert mid_build not in list_epochs(store)  # abandoned: deleted before that run built
    assert read_current(store) == mid_swap > mid_build
    assert gallery.epochs() == [mid_swap, previous]
    still_serving()

    summary = compacted(run_job(jobs, gallery))
    assert summary["epoch"] > mid_swap
    assert gallery.epochs() == [summary["epoch"]] * NUM_SHARDS
    assert sorted(list_epochs(store)) == [summary["epoch"]]  # retention 0
    assert all(map(same_ranking, gallery.search(probes), expected))


def test_erasure_leaves_no_trace_in_storage(gallery, jobs):
    rng = np.random.default_rng(5)
    subject = f"erase-{uuid.uuid4().hex}"
    shard = shard_for(subject, NUM_SHARDS)
    store = gallery.store
    current = read_current(store)
    watermark = read_manifest(store, current).shards[shard].watermark if current is not None else 0
    gallery.enrol(subject, unit(rng, 2))
    events = LogReader(store, shard).read(watermark)
    stored = [e.vector for _, e in events if isinstance(e, EnrolEvent) and e.subject_id == subject]
    assert len(stored) == 2
    compacted(run_job(jobs, gallery))
    gallery.delete(subject)
    summary = compacted(run_job(jobs, gallery))
    assert summary["retention"]["anchor"] == summary["epoch"]
    assert gallery.templates(subject) == []
    objects = every_object(gallery)
    assert objects, "the scan found nothing to scan"
    needles = [subject.encode()] + [v.tobytes() for v in stored] + [v.astype(np.float16).tobytes() for v in stored]
    for where, data in objects.items():
        assert not any(needle in data for needle in needles), f"{where} still holds the erased subject"


def test_a_deleted_gallery_leaves_no_trace_in_storage(gallery, jobs):
    """Delete a gallery as the engine does (mark, erase on every shard, purge), compact with
    retention 0: none of its subject ids and none of its vector bytes are left, the gallery id only
    as a hash; the gallery `default` beside it keeps its own."""
    rng = np.random.default_rng(6)
    registry = gallery.actor(0)
    gallery_id = f"gone-{uuid.uuid4().hex[:8]}"
    generation = ray.get(registry.change_gallery.remote(GalleryEvent(gallery_id, "create", time.time()))).generation
    subjects = [f"erase-{uuid.uuid4().hex}" for _ in range(3)]
    stored = {}
    for subject in subjects:
        key = subject_key(gallery_id, subject)
        stored[key] = unit(rng, 2)
        ray.get(gallery.owner(key).enrol.remote([(key, v, 0.9, None, generation) for v in stored[key]]))
    kept = f"kept-{uuid.uuid4().hex[:8]}"
    kept_ids = [t for t, _ in gallery.enrol(kept, unit(rng, 1))]
    compacted(run_job(jobs, gallery))  # the gallery's templates are in a snapshot now, not only in the log
    ray.get(registry.change_gallery.remote(GalleryEvent(gallery_id, "delete", time.time())))
    erased = ray.get([gallery.actor(s).erase_gallery.remote(gallery_id, generation) for s in range(gallery.num_shards)])
    assert sum(map(len, erased)) == 6
    assert ray.get(registry.change_gallery.remote(GalleryEvent(gallery_id, "purge", time.time()))) is None
    summary = compacted(run_job(jobs, gallery))
    assert summary["retention"]["anchor"] == summary["epoch"]
    assert gallery.templates(kept) == kept_ids
    for key in stored:
        assert [t.template_id for t in ray.get(gallery.owner(key).templates.remote(key))] == []
    objects = every_object(gallery)
    needles = [gallery_id.encode()] + [s.encode() for s in subjects]
    needles += [v.tobytes() for vs in stored.values() for v in vs] + [v.astype(np.float16).tobytes() for vs in stored.values() for v in vs]
    for where, data in objects.items():
        assert not any(needle in data for needle in needles), f"{where} still holds the deleted gallery"
    with pytest.raises(ray.exceptions.RayTaskError, match="NoSuchGalleryError"):  # an enrolment sent before the delete
        key = subject_key(gallery_id, "late")
        ray.get(gallery.owner(key).enrol.remote([(key, unit(rng, 1)[0], 0.9, None, generation)]))


def every_object(gallery: Gallery) -> dict[str, bytes]:
    """Every file under the storage root (temporary ones too), or every object under the S3 prefix."""
    if gallery.storage_uri.startswith("file://"):
        root = Path(gallery.storage_uri.removeprefix("file://"))
        return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    store = gallery.store
    return {key: store.read(key) for key in store.list("")}
