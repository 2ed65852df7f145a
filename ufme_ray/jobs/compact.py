"""The compaction Ray Job: `ray job submit --address … -- python -m ufme_ray.jobs.compact [flags]`.

Settings come from UFME_* environment variables (and UFME_CONFIG, a YAML file) of the job's
runtime environment, which inherits the cluster's; the flags override them. The steps:

  lock       take the gallery's compaction lock (jobs.lock); if another run holds it, say so and
             exit 0 with status "skipped"
  prepare    delete epochs abandoned by killed runs, check the gallery's shape, pick the epoch
  build      build every shard of the new epoch in parallel, one Ray task each (jobs.build)
  commit     write the epoch's MANIFEST, then move CURRENT to it (the commit point)
  swap       ask every shard actor to swap to it (jobs.swap)
  retention  delete superseded epochs and covered log segments (gallery.retention); while a
             gallery written without encryption is being encrypted (`encryption.accept_plaintext`),
             count the plaintext objects left (`plaintext_objects_left` in the summary)
  record     a run that opened the storage leaves its summary there (orchestration.compactions),
             for GET /api/v1/compaction

A run killed before `commit` leaves the previous epoch current and untouched; killed after it,
shards that did not swap keep serving the previous epoch plus their delta (the same answers)
until the next run. Every run records metrics (jobs.metrics) and prints one JSON line
`{"compaction_summary": {...}}` last. Exit status: 0 compacted or skipped, 1 failed, 2 bad settings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import ray

from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.gallery.retention import abandoned_epochs, apply_retention, delete_epochs, list_epochs
from ufme_ray.gallery.epochs import next_epoch, publish_current, read_current, read_manifest, write_manifest
from ufme_ray.gallery.manifest import Manifest
from ufme_ray.gallery.build import ShardBuild
from ufme_ray.gallery.encryption import EncryptedObjectStore, encryption_census, open_configured_storage
from ufme_ray.gallery.storage import ObjectStore, StorageError
from ufme_ray.jobs import lock
from ufme_ray.jobs.build import build_all
from ufme_ray.jobs.logs import configure_logging
from ufme_ray.jobs.metrics import CompactionMetrics
from ufme_ray.jobs.swap import swap_all
from ufme_ray.orchestration.compactions import LAST_COMPACTION_KEY, LastCompaction, write_last_compaction

logger = logging.getLogger("ufme_ray.jobs.compact")

SUMMARY_KEY = "compaction_summary"


class CompactionDeadlineError(TimeoutError):
    """The run did not finish within `compaction.deadline_s`."""


class GalleryShapeError(ValueError):
    """The job's shard count or dimension is not the gallery's."""


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining_s(self) -> float:
        return self._end - time.monotonic()

    def check(self, step: str) -> None:
        if self.remaining_s() <= 0:
            raise CompactionDeadlineError(f"deadline of {self.seconds:.0f} s passed before step {step!r}")


@dataclasses.dataclass
class Summary:
    """What a run did; printed as the job's last line and recorded as metrics."""

    status: str  # compacted | skipped | failed
    storage_uri: str
    namespace: str
    epoch: int | None = None
    previous_epoch: int | None = None
    duration_s: float = 0.0
    vectors_in: int = 0
    vectors_out: int = 0
    vectors_dropped: int = 0
    shards: list[dict] = dataclasses.field(default_factory=list)
    swapped: list[int] = dataclasses.field(default_factory=list)
    not_running: list[int] = dataclasses.field(default_factory=list)
    abandoned_epochs_deleted: list[int] = dataclasses.field(default_factory=list)
    retention: dict | None = None
    plaintext_objects_left: int | None = None  # counted only while encryption.accept_plaintext is on
    timeline: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # step -> [start, end], unix s
    error: str | None = None


def _check_shape(store: ObjectStore, base: Manifest | None, num_shards: int, dim: int) -> None:
    if base is not None:
        try:
            base.check_shape(num_shards, dim)
        except ValueError as exc:
            raise GalleryShapeError(f"{exc} (pass --num-shards and --dim)") from exc
    if store.list(f"events/shard-{num_shards}"):
        raise GalleryShapeError(
            f"{store.uri} holds a log for shard {num_shards}: the gallery has more than the {num_shards} shards "
            "this job was given (pass --num-shards)"
        )


def plaintext_objects_left(store: ObjectStore) -> int | None:
    """While migrating to encryption (`encryption.accept_plaintext` on): the template objects still
    plaintext after this run, logged with what to do next. None otherwise (a census reads the head
    of every segment and snapshot object, so it runs only during the migration) or if it fails: the
    compaction itself has succeeded by then.
    """
    if not (isinstance(store, EncryptedObjectStore) and store.accept_plaintext):
        return None
    try:
        census = encryption_census(store)
    except Exception:
        logger.exception("could not count the plaintext objects left; `ufme-ray encryption status` says")
        return None
    if census.plaintext:
        logger.warning(
            "encryption migration: %d plaintext objects left (%d read by a restore); superseded ones go with "
            "the first compaction after compaction.retention_s", len(census.plaintext), len(census.plaintext_current),
        )
    else:
        logger.warning("encryption migration complete: no plaintext objects left; remove encryption.accept_plaintext")
    return len(census.plaintext)


class Compaction:
    """One run of the job, step by step; `run` never raises, the summary says what happened."""

    def __init__(self, settings: UfmeSettings, dim: int) -> None:
        self._settings = settings
        self._compaction = settings.compaction
        self._num_shards = settings.gallery.num_shards
        self._dim = dim
        self._deadline = Deadline(settings.compaction.deadline_s)
        self.summary = Summary(
            status="failed", storage_uri=settings.resolved_storage_uri, namespace=settings.compaction.namespace
        )

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        self._deadline.check(name)
        started = time.time()
        logger.info("step %s", name)
        try:
            yield
        finally:
            self.summary.timeline[name] = [round(started, 3), round(time.time(), 3)]
        logger.info("step %s done in %.1f s", name, time.time() - started)

    def run(self) -> Summary:
        started = time.monotonic()
        holder = store = None
        try:
            with self._step("lock"):
                holder = lock.acquire(self._compaction.namespace)
            store = open_configured_storage(self._settings)
            with self._step("prepare"):
                base = self._prepare(store)
            with self._step("build"):
                builds = build_all(
                    store,
                    self._settings,
                    self.summary.epoch,
                    dim=self._dim,
                    base=base,
                    remaining_s=self._deadline.remaining_s,
                    on_built=lambda built: self._inject_fault("build"),
                )
            self._record_builds(builds)
            self._inject_delay()
            with self._step("commit"):
                write_manifest(
                    store, self.summary.epoch, self._num_shards, self._dim, self._settings.gallery.index,
                    [b.info for b in builds],
                )
                publish_current(store, self.summary.epoch)
            with self._step("swap"):
                swapped = swap_all(
                    self._num_shards,
                    self._compaction.namespace,
                    self.summary.epoch,
                    concurrency=self._compaction.swap_concurrency,
                    remaining_s=self._deadline.remaining_s,
                    on_swapped=lambda shard, stats: self._inject_fault("swap"),
                )
            self.summary.swapped = sorted(s for s, stats in swapped.items() if stats is not None)
            self.summary.not_running = sorted(s for s, stats in swapped.items() if stats is None)
            with self._step("retention"):
                report = apply_retention(store, retention_s=self._compaction.retention_s)
            self.summary.retention = dataclasses.asdict(report)
            self.summary.plaintext_objects_left = plaintext_objects_left(store)
            self.summary.status = "compacted"
        except lock.LockHeldError as exc:
            logger.warning("%s; this run does nothing", exc)
            self.summary.status, self.summary.error = "skipped", str(exc)
        except Exception as exc:
            logger.exception("compaction failed; the previous epoch stays live")
            self.summary.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.summary.duration_s = round(time.monotonic() - started, 3)
            if store is not None:
                self._record_last(store)  # under the lock: two runs never write it at once
            if holder is not None:
                lock.release(holder)
        return self.summary

    def _record_last(self, store: ObjectStore) -> None:
        """Leave the summary where the API reads it; the run's outcome stands if it cannot be written."""
        try:
            write_last_compaction(
                store, LastCompaction.model_validate({**dataclasses.asdict(self.summary), "finished_at": time.time()})
            )
        except StorageError:
            logger.exception("could not record this run's summary in %s", LAST_COMPACTION_KEY)

    def _inject_fault(self, step: str) -> None:
        """Tests only (`compaction.crash_at`): die like a killed pod, right after a shard's build or swap."""
        if self._compaction.crash_at == step:
            logger.error("fault injection: killing the job in the middle of step %s", step)
            os.kill(os.getpid(), signal.SIGKILL)

    def _inject_delay(self) -> None:
        """Tests only (`compaction.delay_commit_s`): a slow build, holding the lock while writes go on."""
        if self._compaction.delay_commit_s:
            logger.warning("fault injection: waiting %.1f s before committing", self._compaction.delay_commit_s)
            time.sleep(self._compaction.delay_commit_s)

    def _prepare(self, store: ObjectStore) -> Manifest | None:
        """Clean up after killed runs, check the shape, pick the new epoch; returns the base manifest."""
        current = read_current(store)
        base = read_manifest(store, current) if current is not None else None
        _check_shape(store, base, self._num_shards, self._dim)
        epochs = list_epochs(store)
        # Numbered before the clean-up, so an abandoned epoch's number is never reused.
        self.summary.epoch = next_epoch(store)
        self.summary.previous_epoch = current
        doomed = abandoned_epochs(epochs, current)
        delete_epochs(store, epochs, doomed)
        self.summary.abandoned_epochs_deleted = doomed
        logger.info(
            "compacting %s (%d shards, dim %d): epoch %s -> %d%s",
            store.uri, self._num_shards, self._dim, current, self.summary.epoch,
            f"; deleted abandoned epochs {doomed}" if doomed else "",
        )
        return base

    def _record_builds(self, builds: list[ShardBuild]) -> None:
        self.summary.shards = [
            {
                "shard": b.info.shard,
                "watermark": b.info.watermark,
                "vectors_in": b.vectors_in,
                "vectors_out": b.info.count,
                "kind": b.info.params.kind,
            }
            for b in builds
        ]
        self.summary.vectors_in = sum(b.vectors_in for b in builds)
        self.summary.vectors_out = sum(b.info.count for b in builds)
        self.summary.vectors_dropped = sum(b.vectors_dropped for b in builds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ufme_ray.jobs.compact",
        description="Compact the gallery: rebuild every shard's snapshot, swap the shards to it, apply retention.",
    )
    parser.add_argument("--config", type=Path, help="settings YAML (default: UFME_CONFIG); UFME_* variables override it")
    parser.add_argument("--storage-uri", help="gallery storage (default: UFME_STORAGE_URI or the settings')")
    parser.add_argument("--num-shards", type=int, help="gallery shards (default: UFME_GALLERY__NUM_SHARDS)")
    parser.add_argument("--dim", type=int, help="embedding dimension (default: the configured embedder's)")
    parser.add_argument("--namespace", help="Ray namespace of the shard actors (default: ufme)")
    parser.add_argument("--retention-s", type=float, help="default: UFME_COMPACTION__RETENTION_S or 3600")
    parser.add_argument("--deadline-s", type=float, help="default: UFME_COMPACTION__DEADLINE_S or 3600")
    return parser


def load_settings(args: argparse.Namespace) -> UfmeSettings:
    """The settings of the environment and config file, with the flags on top. Raises ConfigError."""
    overrides: dict = {}
    if args.storage_uri:
        overrides["storage_uri"] = args.storage_uri
    if args.num_shards is not None:
        overrides["gallery"] = {"num_shards": args.num_shards}
    compaction = {
        key: value
        for key, value in (("namespace", args.namespace), ("retention_s", args.retention_s), ("deadline_s", args.deadline_s))
        if value is not None
    }
    if compaction:
        overrides["compaction"] = compaction
    return UfmeSettings.load(args.config or os.environ.get("UFME_CONFIG"), **overrides)


def embedding_dim(settings: UfmeSettings) -> int:
    from ufme_ray.vision.registry import ModelSpecs

    return ModelSpecs.from_settings(settings).embedder.embedding_dim


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        settings = load_settings(args)
        dim = args.dim or embedding_dim(settings)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    # No address: a job driver joins the cluster its job runs on (RAY_ADDRESS set by the job
    # supervisor); "auto" could pick another local cluster from /tmp/ray/ray_current_cluster.
    ray.init(log_to_driver=True)
    summary = Compaction(settings, dim).run()
    CompactionMetrics().record(
        status=summary.status,
        duration_s=summary.duration_s,
        vectors_in=summary.vectors_in,
        vectors_dropped=summary.vectors_dropped,
        epoch=summary.epoch,
    )
    print(json.dumps({SUMMARY_KEY: dataclasses.asdict(summary)}), flush=True)
    ray.shutdown()
    return 1 if summary.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
