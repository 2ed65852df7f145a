"""Chaos: steady enrol + delete + identify load against a running service while faults are injected.

`ChaosRun` drives the load (worker threads at a fixed total rate), books every answer in a
`Ledger`, runs one `Fault` at a time (then a mixed round), measures how long the service takes
to answer correctly again after each, and ends with a full check: every acknowledged enrolment
is found by identify and by GET, no acknowledged delete ever comes back. Faults are objects with
a name and an `inject()`; the ones that need a process to kill find it through the cluster's
dashboard (`ray_processes`), so the harness works from outside the cluster.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from tqdm import tqdm

from proving.ledger import GalleryLedger, Ledger, Subject, Violation
from proving.ray_processes import alive_actors
from proving.seaweedfs import SeaweedS3
from ufme_ray.config import UfmeSettings
from ufme_ray.fault_injection import TestingSettings
from ufme_ray.jobs import submit as job_submit

logger = logging.getLogger(__name__)

TOP_K = 10
WRITE_OPERATIONS = ("enrol", "delete", "gallery")
# Galleries kept alive at most: the mix creates until there are this many, then also deletes.
LIVE_GALLERIES = 3
# Answers that say "nothing happened, and why": the ledger treats them as refusals, not ambiguity.
REFUSALS = {400, 404, 409, 413, 415, 422}
PHOTO_UNUSABLE = {400, 409, 413, 415, 422}  # the same photo would be refused again
REFUSED = "refused"  # the status of a request whose connection was refused: never sent, so nothing happened
# A head or node loss (issue 13): the service must answer correctly again within this many seconds.
NODE_LOSS_RECOVERY_S = 60.0


@dataclass(frozen=True)
class Promise:
    """What the service promises while a fault lasts, checked over the answers sent during it
    (`ChaosRun.broken_promises`). The ledger's checks (nothing lost or resurrected) hold for every fault."""

    recovery_within_s: float | None = None  # correct answers again this soon after the fault began
    # The only statuses a failed write may get besides the refusals (4xx) that say nothing happened;
    # None: any (a killed replica's requests may end in a 500).
    write_failures: frozenset[str] | None = None
    reads_may_fail: bool = True


# A head or node loss: back within the bound; a write fails with a clean 503, or never reaches a
# listening service (refused, timed out, cut) while the head is down; never another 5xx.
NODE_LOSS_PROMISE = Promise(
    recovery_within_s=NODE_LOSS_RECOVERY_S, write_failures=frozenset({"503", REFUSED, "timeout", "connection"})
)


@dataclass(frozen=True)
class Target:
    """How to reach the service and its cluster."""

    url: str
    api_key: str
    dashboard_url: str
    ray_token: str | None
    settings: UfmeSettings  # storage, shards: what the compaction job needs
    embedding_dim: int


@dataclass
class Answer:
    operation: str
    phase: str
    status: str  # HTTP status, or "timeout" / "refused" (never sent) / "connection" (lost on the way)
    sent_at: float
    latency_s: float

    @property
    def ok(self) -> bool:
        return self.status.isdigit() and int(self.status) < 300


@dataclass
class FaultResult:
    name: str
    started_at: float
    injected_s: float  # how long the injection itself took (an outage's length, a job's run)
    recovery_s: float | None  # start of the fault -> a correct identify and an acknowledged enrol
    notes: dict = field(default_factory=dict)
    promise: Promise = Promise()


class Fault:
    """One kind of failure. `inject` returns notes for the report; it may block (an outage).
    `name` heads its row in the report; `key` names it on the harness's command line."""

    name = key = "fault"
    promise = Promise()

    def inject(self, run: "ChaosRun") -> dict:
        raise NotImplementedError


def _kill_actor_process(run: "ChaosRun", choose: Callable[[list], list]) -> dict:
    actors = alive_actors(run.target.dashboard_url, run.target.ray_token)
    victims = choose(actors)
    if not victims:
        raise RuntimeError("no actor process to kill")
    victim = victims[run.random.randrange(len(victims))]
    os.kill(victim.pid, signal.SIGKILL)
    return {"killed": victim.name, "pid": victim.pid}


class KillShardActor(Fault):
    name, key = "kill shard actor", "kill-shard"

    def inject(self, run: "ChaosRun") -> dict:
        return _kill_actor_process(run, lambda actors: [a for a in actors if a.class_name == "ShardActor"])


class KillServeReplica(Fault):
    name, key = "kill serve replica", "kill-replica"

    def inject(self, run: "ChaosRun") -> dict:
        return _kill_actor_process(run, lambda actors: [a for a in actors if a.class_name.startswith("ServeReplica:")])


class KillCompactionJob(Fault):
    """The compaction job SIGKILLs itself at a chosen point (`compaction.crash_at`: right after a
    shard's build, or right after the first shard's swap): the exact mid-step moment an outside
    kill can only hit by luck on a small gallery. Then a clean run must succeed."""

    def __init__(self, step: str):
        self.step = step
        self.name, self.key = f"kill compaction mid-{step}", f"compaction-{step}"

    def inject(self, run: "ChaosRun") -> dict:
        killed = run.compaction(crash_at=self.step)
        reruns = []
        # A rerun may meet another fault of a mixed round (storage down): it must succeed once that is over.
        while len(reruns) < 3 and (not reruns or reruns[-1] != "SUCCEEDED"):
            reruns.append(run.compaction())
        if reruns[-1] != "SUCCEEDED":
            raise RuntimeError(f"the compaction reruns after the killed job ended {reruns}")
        return {"killed_job": killed, "reruns": reruns}


class RestartS3(Fault):
    """SIGKILL the S3 server, keep it down `down_s` seconds under load, start it again."""

    name, key = "restart S3 server", "s3-restart"

    def __init__(self, server: SeaweedS3, down_s: float):
        self.server, self.down_s = server, down_s

    def inject(self, run: "ChaosRun") -> dict:
        run.outage(True)
        try:
            self.server.stop(kill=True)
            time.sleep(self.down_s)
        finally:
            run.outage(False)
        self.server.start()
        return {"down_s": self.down_s}


class DownUp(Fault):
    """`ufme-ray down` then `ufme-ray up`: the whole cluster stops; the gallery stays in storage."""

    name, key = "ufme-ray down / up", "down-up"

    def __init__(self, down: Callable[[], None], up: Callable[[], None]):
        self.down, self.up = down, up

    def inject(self, run: "ChaosRun") -> dict:
        started = time.monotonic()
        self.down()
        down_s = time.monotonic() - started
        self.up()
        return {"down_s": round(down_s, 1), "up_s": round(time.monotonic() - started - down_s, 1)}


class Upgrade(Fault):
    """What KubeRay does on a change to a RayService's cluster spec: a new cluster starts beside the
    old one on the same storage, the traffic moves to it the moment it reports ready, and the old
    one is stopped after `deletion_delay_s` (KubeRay's rayClusterDeletionDelaySeconds).

    `start_new` starts the new cluster and returns its Target once its application is RUNNING (so
    its gallery is loaded); `stop_old` stops the old one. Requests sent to the old cluster before
    the switch finish there."""

    key = "upgrade"
    # Reads never fail because of the switch; a write fails only with a clean 503.
    promise = Promise(write_failures=frozenset({"503"}), reads_may_fail=False)

    def __init__(self, start_new: Callable[[], Target], stop_old: Callable[[], None], *,
                 deletion_delay_s: float = 10.0, name: str = "upgrade"):
        self.start_new, self.stop_old, self.deletion_delay_s, self.name = start_new, stop_old, deletion_delay_s, name

    def inject(self, run: "ChaosRun") -> dict:
        started = time.monotonic()
        target = self.start_new()
        ready_s = time.monotonic() - started
        run.switch(target)
        time.sleep(self.deletion_delay_s)
        self.stop_old()
        return {"new_ready_s": round(ready_s, 1), "old_stopped_s": round(time.monotonic() - started, 1), "url": target.url}


def _shard_actors(run: "ChaosRun") -> dict[str, int]:
    """Each shard actor's process id, by actor name."""
    actors = alive_actors(run.target.dashboard_url, run.target.ray_token)
    return {a.name: a.pid for a in actors if a.class_name == "ShardActor"}


def _shard_actors_back(run: "ChaosRun", names: set[str], *, lost: frozenset[int] = frozenset(), timeout_s: float = 300) -> dict[str, int]:
    """The shard actors once each of `names` is alive in a process not among `lost` (restarted, or
    never gone). The state API reports a lost node's actors alive until the GCS has noticed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        actors = _shard_actors(run)
        if names <= actors.keys() and not lost.intersection(actors.values()):
            return actors
        time.sleep(1.0)  # polling interval
    raise RuntimeError(f"shard actors not back {timeout_s:.0f} s after the fault: {actors}")


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


class HeadLoss(Fault):
    """SIGKILL of the head's GCS and then of every other process of the head (raylet, dashboard,
    Serve controller, proxy, replicas): a head pod that crashed. Then the head starts again (`restart`,
    the same `ufme-ray up`) and, with GCS fault tolerance, reads the cluster back from Redis. The
    shard actors on the worker node must survive it; the notes give their processes before and after."""

    name, key = "head loss", "head-loss"
    promise = NODE_LOSS_PROMISE

    def __init__(self, head_processes: Callable[[], list[psutil.Process]], restart: Callable[[], None]):
        self.head_processes, self.restart = head_processes, restart

    def inject(self, run: "ChaosRun") -> dict:
        shards_before = _shard_actors(run)
        processes = self.head_processes()
        gcs = [p for p in processes if p.name() == "gcs_server"]
        if not gcs:
            raise RuntimeError("the head has no GCS process to kill")
        _kill(gcs)
        _kill([p for p in processes if p not in gcs])
        killed_s = time.monotonic()
        self.restart()
        return {"killed": len(processes), "restart_s": round(time.monotonic() - killed_s, 1),
                "shards_before": shards_before, "shards_after": _shard_actors_back(run, set(shards_before))}


class NodeLoss(Fault):
    """SIGKILL of the raylet of the worker node that holds the shard actors: the node is lost (its
    workers, the shard actors among them, exit when their raylet dies). `replace` then does what
    KubeRay does for the pod: the rest of the old node goes and a new node with the same shard slots
    joins; the shard actors restart there and restore from storage."""

    name, key = "node loss", "node-loss"
    promise = NODE_LOSS_PROMISE

    def __init__(self, raylet: Callable[[], psutil.Process], replace: Callable[[], None]):
        self.raylet, self.replace = raylet, replace

    def inject(self, run: "ChaosRun") -> dict:
        shards_before = _shard_actors(run)
        raylet = self.raylet()
        raylet.kill()
        killed_s = time.monotonic()
        self.replace()
        shards_after = _shard_actors_back(run, set(shards_before), lost=frozenset(shards_before.values()))
        return {"raylet_pid": raylet.pid, "replace_s": round(time.monotonic() - killed_s, 1),
                "shards_before": shards_before, "shards_after": shards_after}


class Mixed(Fault):
    """Several faults at once: each in its own thread, started a moment apart."""

    name = key = "mixed"

    def __init__(self, faults: list[Fault], stagger_s: float = 1.0):
        self.faults, self.stagger_s = faults, stagger_s

    def inject(self, run: "ChaosRun") -> dict:
        notes: dict = {}
        errors: list[str] = []

        def one(fault: Fault) -> None:
            try:
                notes[fault.name] = fault.inject(run)
            except Exception as exc:  # reported, and fails the run
                errors.append(f"{fault.name}: {exc}")

        threads = []
        for fault in self.faults:
            thread = threading.Thread(target=one, args=(fault,))
            thread.start()
            threads.append(thread)
            time.sleep(self.stagger_s)
        for thread in threads:
            thread.join()
        if errors:
            raise RuntimeError("; ".join(errors))
        return notes


class ChaosRun:
    def __init__(self, target: Target, photos: list[Path], *, rate: float, workers: int = 6, seed: int = 0,
                 request_timeout_s: float = 60.0, mix: dict[str, float] | None = None):
        self.target = target
        self.random = random.Random(seed)
        # An unclear write can still land until the request's own timeout (and Serve's graceful
        # shutdown of a replica, 20 s by default) have passed.
        self.ledger = Ledger(photos, run_id=uuid.uuid4().hex[:6], seed=seed, in_flight_bound_s=request_timeout_s + 30)
        self.rate, self.workers = rate, workers
        self.mix = mix or {"enrol": 0.4, "delete": 0.2, "identify": 0.35, "gallery": 0.05}
        self.galleries = GalleryLedger(self.ledger.run_id)
        self.phase = "warm-up"
        self.answers: list[Answer] = []
        self.history: defaultdict[str, list[tuple]] = defaultdict(list)
        self.violations: list[Violation] = []
        self.identify_misses: Counter = Counter()  # phase -> 200 answers without the probed acknowledged subject
        self.outage_writes: Counter = Counter()  # status of the writes sent while the S3 server was down
        self.results: list[FaultResult] = []
        self._in_outage = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._http = httpx.Client(
            base_url=target.url, timeout=request_timeout_s, headers={"Authorization": f"Bearer {target.api_key}"},
            limits=httpx.Limits(max_connections=workers * 2),
        )
        self._bar: tqdm | None = None

    # --- the requests, each booked in the ledger -----------------------------------------------

    def _send(self, operation: str, method: str, path: str, subject: Subject, **kwargs) -> tuple[Answer, httpx.Response | None]:
        phase, sent_at, sent_during_outage = self.phase, time.time(), self._in_outage
        started = time.monotonic()
        response = None
        try:
            response = self._http.request(method, path, **kwargs)
            status = str(response.status_code)
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.ConnectError:  # no connection was made, so nothing was sent: a clear "nothing happened"
            status = REFUSED
        except httpx.TransportError:
            status = "connection"
        answer = Answer(operation, phase, status, sent_at, time.monotonic() - started)
        with self._lock:
            self.answers.append(answer)
            if sent_during_outage and operation in WRITE_OPERATIONS:
                self.outage_writes[status] += 1
            if operation in WRITE_OPERATIONS:  # a violation's report shows the subject's whole story
                self.history[subject.subject_id].append((operation, status, round(sent_at, 3), round(answer.latency_s, 3)))
        if self._bar is not None:
            self._bar.update()
        return answer, response

    @staticmethod
    def _image(photo: Path) -> dict:
        return {"files": {"image": (photo.name, photo.read_bytes(), "image/jpeg")}}

    def enrol(self) -> Answer | None:
        subject = self.ledger.new_subject(self.phase)
        if subject is None:
            return None
        answer, _ = self._send("enrol", "POST", f"/api/v1/subjects/{subject.subject_id}/faces", subject,
                               **self._image(subject.photo))
        if answer.status == "201":
            self.ledger.enrolled(subject, answer.phase)
        elif answer.status == REFUSED:
            self.ledger.enrol_refused(subject, photo_unusable=False)
        elif answer.status.isdigit() and int(answer.status) in REFUSALS:
            self.ledger.enrol_refused(subject, photo_unusable=int(answer.status) in PHOTO_UNUSABLE)
        else:
            self.ledger.enrol_ambiguous(subject, answer.phase, answer.sent_at)
        return answer

    def delete(self, *, ambiguous_only: bool = False) -> Answer | None:
        subject = self.ledger.subject_to_delete(time.time(), ambiguous_only=ambiguous_only)
        if subject is None:
            return None
        was_acknowledged = self.ledger.is_acknowledged(subject.subject_id)
        answer, response = self._send("delete", "DELETE", f"/api/v1/subjects/{subject.subject_id}", subject)
        if answer.status == "200":
            self.ledger.deleted(subject, answer.phase, answer.sent_at, time.time())
        elif answer.status == "404" and _error_code(response) == "unknown_subject":
            if was_acknowledged:
                self._violation("lost", subject, "DELETE answered 404 for an acknowledged enrolment")
            self.ledger.deleted(subject, answer.phase, answer.sent_at, time.time())
        elif answer.status == REFUSED or (answer.status.isdigit() and int(answer.status) in REFUSALS):
            self.ledger.delete_refused(subject)
        else:
            self.ledger.delete_ambiguous(subject, answer.phase, answer.sent_at)
        return answer

    def gallery(self) -> Answer:
        """Create a gallery, or (with enough of them) delete one; booked in the gallery ledger."""
        victim = self.galleries.to_delete(self.random) if len(self.galleries.live) >= LIVE_GALLERIES else None
        if victim is None:
            gallery_id = self.galleries.new_id()
            answer, _ = self._send("gallery", "POST", "/api/v1/galleries", Subject(gallery_id, Path(), self.phase),
                                   json={"gallery_id": gallery_id})
            if answer.status != REFUSED:
                (self.galleries.created if answer.status == "201" else self.galleries.unclear)(gallery_id, answer.phase)
            return answer
        answer, _ = self._send("gallery", "DELETE", f"/api/v1/galleries/{victim}", Subject(victim, Path(), self.phase))
        if answer.status != REFUSED:
            (self.galleries.deleted if answer.status == "200" else self.galleries.unclear)(victim, answer.phase)
        return answer

    def identify(self, subject: Subject | None = None) -> tuple[Answer, bool] | None:
        """Identify with a live subject's photo; returns the answer and whether the subject was found."""
        subject = subject or self.ledger.subject_to_identify()
        if subject is None:
            return None
        answer, response = self._send("identify", "POST", "/api/v1/identify", subject, data={"top_k": str(TOP_K)},
                                      **self._image(subject.photo))
        if answer.status != "200" or response is None:
            return answer, False
        returned = [c["subject_id"] for face in response.json()["faces"] for c in face["candidates"]]
        for ghost in self.ledger.erased_before(returned, answer.sent_at):
            self._violation("resurrected", ghost, f"identify at phase {answer.phase!r} returned it after its delete")
        found = subject.subject_id in returned
        if not found and self.ledger.is_acknowledged(subject.subject_id):
            with self._lock:
                self.identify_misses[answer.phase] += 1
        return answer, found

    def _violation(self, kind: str, subject: Subject, detail: str) -> None:
        with self._lock:
            story = "; ".join(f"{op} {status} sent {sent:.3f} took {took}s" for op, status, sent, took in self.history[subject.subject_id])
            self.violations.append(Violation(kind, subject.subject_id, subject.phase, f"{detail} [{story}]"))

    # --- load -----------------------------------------------------------------------------------

    def _worker(self, ticks: "_Ticker") -> None:
        operations = list(self.mix)
        weights = [self.mix[o] for o in operations]
        local = random.Random(self.random.random())
        while ticks.wait(self._stop):
            operation = local.choices(operations, weights)[0]
            try:
                done = getattr(self, operation)()
                if done is None and operation != "enrol":
                    self.enrol()  # nothing to delete/identify yet: grow the gallery instead
            except Exception:  # a harness bug must not silently stop a worker
                logger.exception("chaos worker: %s failed", operation)

    def switch(self, target: Target) -> None:
        """Send every request from now on to another cluster (a RayService moving its Service)."""
        with self._lock:
            self.target = target
            self._http.base_url = target.url

    def outage(self, active: bool) -> None:
        with self._lock:
            self._in_outage = active

    def compaction(self, **compaction: object) -> str:
        """Run the compaction job (with fault-injection settings) to its end; returns its status."""
        # The job validates these again: its fault settings need the testing switch.
        settings = self.target.settings.model_copy(update={
            "compaction": self.target.settings.compaction.model_copy(update={"swap_concurrency": 1, **compaction}),
            "testing": TestingSettings(fault_injection=True),
        })
        client = job_submit.connect(self.target.dashboard_url, self.target.ray_token)
        job = job_submit.submit(client, settings, slot=f"chaos-{uuid.uuid4().hex[:10]}", dim=self.target.embedding_dim)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            status = client.get_job_status(job.submission_id)
            if status.is_terminal():
                return status.value
            time.sleep(1.0)
        raise RuntimeError(f"compaction job {job.submission_id} did not end in 600 s")

    # --- phases ---------------------------------------------------------------------------------

    def _recovered(self, since: float, timeout_s: float) -> float | None:
        """Seconds from `since` until a correct identify and an acknowledged enrol (None: not within timeout)."""
        identified = enrolled = None
        deadline = since + timeout_s
        while time.monotonic() < deadline and (identified is None or enrolled is None):
            if identified is None:
                result = self.identify()
                if result is not None and result[1]:
                    identified = time.monotonic()
            if enrolled is None:
                answer = self.enrol()
                if answer is not None and answer.status == "201":
                    enrolled = time.monotonic()
            time.sleep(0.25)  # probe interval
        if identified is None or enrolled is None:
            return None
        return max(identified, enrolled) - since

    def run(self, faults: list[Fault], *, warmup_s: float, settle_s: float, recovery_timeout_s: float = 300,
            warmup_subjects: int = 0, warmup_timeout_s: float = 120) -> None:
        """Requests at `rate` from `workers` threads; after `warmup_s`, and once the ledger holds
        `warmup_subjects` acknowledged or erased subjects (a slow machine takes longer to get there),
        each fault in turn, its recovery timed, then `settle_s`; the final check comes after."""
        ticks = _Ticker(self.rate)
        threads = [threading.Thread(target=self._worker, args=(ticks,), daemon=True) for _ in range(self.workers)]
        self._bar = tqdm(desc="chaos requests", unit="req")
        for thread in threads:
            thread.start()
        try:
            time.sleep(warmup_s)
            deadline = time.monotonic() + warmup_timeout_s
            while self._decided() < warmup_subjects and time.monotonic() < deadline:
                time.sleep(0.5)
            for fault in faults:
                self.phase = fault.name
                self._bar.set_postfix_str(f"fault: {fault.name}")
                started = time.monotonic()
                notes = fault.inject(self)
                injected_s = time.monotonic() - started
                recovery_s = self._recovered(started, recovery_timeout_s)
                self.results.append(FaultResult(fault.name, started, round(injected_s, 2),
                                                None if recovery_s is None else round(recovery_s, 2), notes,
                                                fault.promise))
                time.sleep(settle_s)
            self.phase = "final check"
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()
            self._bar.close()
            self._bar = None

    def _decided(self) -> int:
        acknowledged, erased, _ = self.ledger.snapshot()
        return len(acknowledged) + len(erased)

    # --- the end: nothing acknowledged lost, nothing erased back --------------------------------

    def settle_ambiguous(self, timeout_s: float = 300) -> None:
        """Delete every ambiguous subject until a delete sent after its in-flight bound answers 200 or 404
        (then it counts as erased)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            _, _, ambiguous = self.ledger.snapshot()
            if not ambiguous:
                return
            while self.delete(ambiguous_only=True) is not None:
                pass
            time.sleep(1.0)  # until the next ambiguous subject's in-flight bound has passed
        raise RuntimeError(f"{len(self.ledger.snapshot()[2])} ambiguous subjects could not be settled")

    def verify(self) -> dict:
        """Every acknowledged subject found (identify and GET), every erased one absent. Books violations."""
        acknowledged, erased, _ = self.ledger.snapshot()
        # Every count named even at zero: a run can end with everything it enrolled erased again.
        checked = Counter(acknowledged=0, erased=0, galleries=0)
        for subject in tqdm(acknowledged, desc="check acknowledged", unit="subject"):
            found = self._until_answered(lambda: self.identify(subject))
            got = self._get(subject.subject_id)
            if not found or got != 200:
                self._violation("lost", subject, f"final check: identify found={found}, GET {got}")
            checked["acknowledged"] += 1
        for subject in tqdm(erased, desc="check erased", unit="subject"):
            got = self._get(subject.subject_id)
            if got != 404:
                self._violation("resurrected", subject, f"final check: GET answered {got}")
            self._until_answered(lambda: self.identify(subject))  # books a violation if it comes back
            checked["erased"] += 1
        expected = [(g, p, 200, "lost") for g, p in sorted(self.galleries.live.items())]
        expected += [(g, p, 404, "resurrected") for g, p in sorted(self.galleries.gone.items())]
        for gallery_id, phase, want, kind in expected:
            got = self._http.get(f"/api/v1/galleries/{gallery_id}").status_code
            if got != want:
                self._violation(kind, Subject(gallery_id, Path(), phase), f"final check: GET gallery answered {got}")
            checked["galleries"] += 1
        return dict(checked)

    def _until_answered(self, call: Callable[[], tuple[Answer, bool] | None], timeout_s: float = 120) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = call()
            if result is not None and result[0].status == "200":
                return result[1]
            time.sleep(1.0)
        raise RuntimeError("the service did not answer identify with 200 during the final check")

    def _get(self, subject_id: str) -> int:
        response = self._http.get(f"/api/v1/subjects/{subject_id}")
        return response.status_code

    # --- the report -----------------------------------------------------------------------------

    def broken_promises(self) -> list[str]:
        """What each fault's `Promise` rules out and its phase's answers did anyway."""
        by_phase: dict[str, list[Answer]] = defaultdict(list)
        for answer in self.answers:
            by_phase[answer.phase].append(answer)
        problems = []
        for result in self.results:
            promise = result.promise
            if promise.recovery_within_s is not None and result.recovery_s is not None \
                    and result.recovery_s > promise.recovery_within_s:
                problems.append(f"{result.name}: the service answered correctly again only after {result.recovery_s} s")
            for answer in by_phase[result.name]:
                if answer.ok:
                    continue
                if answer.operation not in WRITE_OPERATIONS:
                    if not promise.reads_may_fail:
                        problems.append(f"{result.name}: a read ({answer.operation}) failed with {answer.status}")
                elif promise.write_failures is not None and answer.status not in promise.write_failures \
                        and not (answer.status.isdigit() and int(answer.status) in REFUSALS):
                    problems.append(f"{result.name}: a write ({answer.operation}) failed with {answer.status}")
        return problems

    def report(self) -> list[dict]:
        """One row per phase: requests, acknowledged, lost, resurrected, errors by status, recovery."""
        by_phase: dict[str, list[Answer]] = defaultdict(list)
        for answer in self.answers:
            by_phase[answer.phase].append(answer)
        violations = Counter((phase, kind) for phase, kind, _ in {(v.phase, v.kind, v.subject_id) for v in self.violations})
        recovery = {r.name: r for r in self.results}
        rows = []
        for phase, answers in by_phase.items():
            errors = Counter(a.status for a in answers if not a.ok)
            write_errors = Counter(a.status for a in answers if not a.ok and a.operation in WRITE_OPERATIONS)
            result = recovery.get(phase)
            rows.append({
                "phase": phase,
                "requests": len(answers),
                "acknowledged": sum(1 for a in answers if a.operation in WRITE_OPERATIONS and a.ok),
                "lost": violations[(phase, "lost")],
                "resurrected": violations[(phase, "resurrected")],
                "identify_misses": self.identify_misses[phase],
                "errors": dict(sorted(errors.items())),
                "write_errors": dict(sorted(write_errors.items())),
                "injected_s": result.injected_s if result else None,
                "recovery_s": result.recovery_s if result else None,
                "notes": result.notes if result else {},
            })
        return rows


def _error_code(response: httpx.Response | None) -> str | None:
    """The API's error code. Serve's proxy answers 404 too while the application is not deployed yet
    (during `ufme-ray up`): that is "not routed", not "unknown subject"."""
    try:
        return response.json()["error"]["code"]
    except (AttributeError, ValueError, KeyError, TypeError):
        return None


def one_photo_per_identity(folders: list[Path]) -> list[Path]:
    """One photo per person: two live subjects never share a face (the duplicate check would refuse it)."""
    photos = []
    for folder in folders:
        for person in sorted(p for p in folder.iterdir() if p.is_dir()):
            images = sorted(p for p in person.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if images:
                photos.append(images[0])
    return photos


class _Ticker:
    """Arrival times at a fixed rate shared by all workers (open loop while a worker is free)."""

    def __init__(self, rate: float):
        self._interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        with self._lock:
            slot = self._next = max(self._next + self._interval, time.monotonic() - self._interval)
        return not stop.wait(max(0.0, slot - time.monotonic()))
