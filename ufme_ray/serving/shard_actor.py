"""The named, detached Ray actor that owns one gallery shard (a thin shell over gallery.Shard).

`ufme-shard-<i>` in namespace "ufme"; `max_restarts=-1` so Ray brings it back after a crash, and
because every acknowledged event is durable in the shard's log, the restarted actor restores
exactly the acknowledged state. Restoring runs in a background thread so that the actor answers
`ready()` (and refuses work with ShardNotReadyError) while it loads.

Crash-only recovery inside the actor too: when a write fails in storage (an S3 outage), the log
writer disables itself, because the failed PUT may or may not have landed. The actor then drops
the shard and restores it again from storage (a new writer epoch that reads whatever did land),
retrying with backoff until storage answers; meanwhile every call gets ShardNotReadyError (503).

Two clusters on one gallery (a KubeRay upgrade starts the new cluster beside the old one): a shard
restores as a follower of the log, claiming nothing, so the cluster that takes traffic keeps
writing. The first request that reaches a follower (after the switch) makes it the writer, which
fences the other cluster's shard; a fenced writer hands over and follows, answering reads and
refusing writes with ShardHandedOverError (503) until it is stopped. So the claim moves once, in
the direction traffic moves, and never back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import ray
from ray.util import metrics

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.galleries import DEFAULT_GALLERY, GalleryRecord
from ufme_ray.gallery.log import CorruptLogError, FencedError, LogUnavailableError
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment, SearchHit, ShardFailedError, TemplateInfo
from ufme_ray.gallery.encryption import open_configured_storage

logger = logging.getLogger(__name__)

NAMESPACE = "ufme"
# Reads run concurrently with writes (the Shard's own locks order them); concurrent enrolments
# are what lets the log group-commit them into one durable write.
MAX_CONCURRENCY = 32
# Restore retries back off up to this; storage that is back is noticed within it.
RESTORE_RETRY_MAX_S = 5.0
GAUGE_REFRESH_S = 10.0
# The shard's writer cannot go on after these; a fresh restore can.
_WRITER_LOST = (LogUnavailableError, ShardFailedError)


def shard_actor_name(shard_id: int) -> str:
    return f"ufme-shard-{shard_id}"


class ShardNotReadyError(RuntimeError):
    """The shard is still restoring (or failed to restore); try again later."""


class ShardHandedOverError(ShardNotReadyError):
    """A newer deployment's shard took the writer claim; writes go there (retry: they will)."""


class ShardActor:
    def __init__(self, settings_json: str, shard_id: int, dim: int):
        self._settings = UfmeSettings.model_validate_json(settings_json)
        self._shard_id = shard_id
        self._dim = dim
        self._shard: Shard | None = None
        self._error: str | None = None
        self._started = time.monotonic()
        self._restore_s: float | None = None  # how long the last restore took
        tags = {"shard": str(shard_id)}
        self._ready_gauge = metrics.Gauge("ufme_shard_ready", "1 when the shard has restored its state", tag_keys=("shard",))
        self._size_gauge = metrics.Gauge("ufme_shard_templates", "live templates held by the shard", tag_keys=("shard",))
        self._restore_gauge = metrics.Gauge("ufme_shard_restore_seconds", "time the last restore took", tag_keys=("shard",))
        self._writer_gauge = metrics.Gauge(
            "ufme_shard_writer", "1 when the shard holds its log's writer claim", tag_keys=("shard",)
        )
        self._ready_gauge.set(0, tags)
        self._writer_gauge.set(0, tags)
        self._reopen_lock = threading.Lock()
        self._role_lock = threading.Lock()
        self._handed_over = False
        self._start_restore()
        threading.Thread(target=self._publish_periodically, name=f"metrics-shard-{shard_id}", daemon=True).start()
        threading.Thread(target=self._follow_periodically, name=f"follow-shard-{shard_id}", daemon=True).start()

    def _publish_periodically(self) -> None:
        """Re-set the gauges now and then: a series can vanish from the export when another process
        with the same tags (a second gallery's shard of the same number) dies, and a gauge set only on
        change would stay missing until the next write."""
        while True:
            time.sleep(GAUGE_REFRESH_S)
            self._ready_gauge.set(1 if self._shard is not None else 0, {"shard": str(self._shard_id)})
            if self._restore_s is not None:
                self._restore_gauge.set(self._restore_s, {"shard": str(self._shard_id)})
            self._publish_size()
            self._publish_role()

    def _follow_periodically(self) -> None:
        """A follower applies the writer's new segments; a writer looks for a newer claim."""
        while True:
            time.sleep(self._settings.gallery.log.follow_interval_s)
            shard = self._shard
            if shard is None:
                continue
            try:
                if shard.is_writer:
                    if shard.superseded():
                        self._hand_over(shard)
                elif shard.follow():
                    self._publish_size()
            except CorruptLogError:  # what it misses was compacted away meanwhile: restore afresh
                logger.exception("shard %d fell behind the log; restoring", self._shard_id)
                self._reopen(shard)
            except Exception:  # storage trouble: the next round tries again, requests are unaffected
                logger.warning("shard %d: following the log failed; retrying", self._shard_id, exc_info=True)

    def _publish_role(self) -> None:
        shard = self._shard
        self._writer_gauge.set(1 if shard is not None and shard.is_writer else 0, {"shard": str(self._shard_id)})

    def _start_restore(self) -> None:
        threading.Thread(target=self._restore, name=f"restore-shard-{self._shard_id}", daemon=True).start()

    def _restore(self) -> None:
        started, delay = time.monotonic(), 0.25
        while True:
            try:
                store = open_configured_storage(self._settings)
                shard = Shard.open(
                    store, self._shard_id, self._settings.gallery.num_shards, self._dim, self._settings.gallery, writer=False
                )
                break
            except Exception as exc:  # reported through ready(); the actor stays up to say why, and retries
                logger.exception("shard %d failed to restore; retrying in %.1f s", self._shard_id, delay)
                self._error = f"{type(exc).__name__}: {exc}"
                time.sleep(delay)
                delay = min(delay * 2, RESTORE_RETRY_MAX_S)
        self._error = None
        self._shard = shard
        tags = {"shard": str(self._shard_id)}
        self._restore_s = time.monotonic() - started
        self._restore_gauge.set(self._restore_s, tags)
        self._ready_gauge.set(1, tags)
        self._publish_size()
        self._publish_role()

    def _write(self, action):
        """Run a write as the log's writer; if it cost the shard its writer, restore the shard (or
        hand over, when a newer writer fenced it) and answer not-ready."""
        shard = self._serving_shard()
        if not shard.is_writer:
            raise ShardHandedOverError(f"shard {self._shard_id} handed its log over to a newer writer")
        try:
            return action(shard)
        except FencedError as exc:
            self._hand_over(shard)
            raise ShardHandedOverError(f"shard {self._shard_id} was fenced ({exc}); following the newer writer") from exc
        except _WRITER_LOST as exc:
            self._reopen(shard)
            raise ShardNotReadyError(f"shard {self._shard_id} lost its log writer ({exc}); restoring from storage") from exc

    def _serving_shard(self) -> Shard:
        """The shard, for a request: the first one to reach a follower that has never been fenced
        makes it the writer (traffic reached this deployment, so it is the one to write)."""
        shard = self._ready_shard()
        if shard.is_writer or self._handed_over:
            return shard
        with self._role_lock:
            if not shard.is_writer and not self._handed_over:
                try:
                    shard.take_writer()
                except Exception as exc:  # storage failed mid-claim: start over from storage
                    logger.exception("shard %d could not take the writer claim", self._shard_id)
                    self._reopen(shard)
                    raise ShardNotReadyError(f"shard {self._shard_id} could not take the writer claim ({exc})") from exc
                self._publish_role()
                self._publish_size()
        return shard

    def _hand_over(self, shard: Shard) -> None:
        with self._role_lock:
            self._handed_over = True
            shard.hand_over()
        self._publish_role()

    def _reopen(self, failed: Shard) -> None:
        with self._reopen_lock:
            if self._shard is not failed:  # a concurrent write already started the restore
                return
            self._shard = None
        self._ready_gauge.set(0, {"shard": str(self._shard_id)})
        self._publish_role()
        failed.close()
        self._start_restore()

    def _ready_shard(self) -> Shard:
        if self._shard is None:
            reason = f"failed to restore: {self._error}" if self._error else "still restoring"
            raise ShardNotReadyError(f"shard {self._shard_id} is {reason}")
        return self._shard

    def _publish_size(self) -> None:
        if self._shard is not None:
            self._size_gauge.set(self._shard.stats().live_templates, {"shard": str(self._shard_id)})

    def _role(self, shard: Shard | None) -> str | None:
        if shard is None:
            return None
        return "writer" if shard.is_writer else "handed_over" if self._handed_over else "follower"

    def ready(self) -> dict:
        shard = self._shard
        return {"shard": self._shard_id, "ready": shard is not None, "error": self._error, "role": self._role(shard)}

    def enrol(self, items: list[tuple]) -> list[tuple[int, int]]:
        """Durably enrol (subject key, vector, quality[, request key[, gallery generation]]) items;
        returns (template_id, seq) each."""
        result = self._write(lambda shard: shard.enrol([Enrolment(*item) for item in items]))
        self._publish_size()
        return result

    def delete(self, subject_id: str) -> list[int]:
        erased = self._write(lambda shard: shard.delete(subject_id))
        self._publish_size()
        return erased

    def search(self, queries: np.ndarray, k: int, galleries: Sequence[str] = (DEFAULT_GALLERY,)) -> list[list[SearchHit]]:
        return self._serving_shard().search(queries, k, galleries)

    def search_subjects(
        self, queries: np.ndarray, top_k: int, galleries: Sequence[str] = (DEFAULT_GALLERY,)
    ) -> list[list[SearchHit]]:
        return self._serving_shard().search_subjects(queries, top_k, galleries)

    def change_gallery(self, event: GalleryEvent) -> GalleryRecord | None:
        return self._write(lambda shard: shard.change_gallery(event, max_galleries=self._settings.gallery.max_galleries))

    def galleries(self) -> list[GalleryRecord]:
        return self._serving_shard().galleries()

    def gallery(self, gallery_id: str) -> GalleryRecord | None:
        return self._serving_shard().gallery(gallery_id)

    def erase_gallery(self, gallery_id: str, generation: int) -> list[int]:
        erased = self._write(lambda shard: shard.erase_gallery(gallery_id, generation))
        self._publish_size()
        return erased

    def gallery_counts(self, gallery_id: str) -> dict:
        return self._serving_shard().gallery_counts(gallery_id)

    def list_subjects(self, gallery_id: str, limit: int) -> list[str]:
        return self._serving_shard().list_subjects(gallery_id, limit)

    def subject_scores(self, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
        return self._serving_shard().subject_scores(subject_id, queries)

    def templates(self, subject_id: str) -> list[TemplateInfo]:
        return self._serving_shard().templates(subject_id)

    def stats(self) -> dict:
        shard = self._ready_shard()
        return {**asdict(shard.stats()), "ready": True, "role": self._role(shard)}

    def swap_to(self, epoch: int) -> dict:
        """Serve snapshot `epoch` (compaction step 4); returns the stats after the swap.

        Idempotent: a shard already at `epoch` or newer (it restarted after CURRENT moved, or a
        retried request) only reports its stats.
        """
        shard = self._ready_shard()
        if shard.stats().snapshot_epoch < epoch:
            shard.swap_to(epoch)
        self._publish_size()
        return asdict(shard.stats())


def shard_handles(
    settings: UfmeSettings,
    dim: int,
    *,
    num_cpus: float,
    resources: dict[str, float] | None = None,
    namespace: str = NAMESPACE,
) -> list:
    """Get (or create) every shard actor in `namespace`. Idempotent across replicas and restarts.

    Another namespace holds a second gallery's actors on the same cluster (benchmarks, tests).
    """
    remote = ray.remote(ShardActor)
    settings_json = settings.transport_json()
    return [
        remote.options(
            name=shard_actor_name(i),
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_concurrency=MAX_CONCURRENCY,
            num_cpus=num_cpus,
            resources=resources or {},
        ).remote(settings_json, i, dim)
        for i in range(settings.gallery.num_shards)
    ]
