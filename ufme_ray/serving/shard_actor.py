"""The named, detached Ray actor that owns one gallery shard (a thin shell over gallery.Shard).

`ufme-shard-<i>` in namespace "ufme"; `max_restarts=-1` so Ray brings it back after a crash, and
because every acknowledged event is durable in the shard's log, the restarted actor restores
exactly the acknowledged state. Restoring runs in a background thread so that the actor answers
`ready()` (and refuses work with ShardNotReadyError) while it loads.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict

import numpy as np
import ray
from ray.util import metrics

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.shard import Enrolment, SearchHit, Shard, TemplateInfo
from ufme_ray.gallery.encryption import open_configured_storage

logger = logging.getLogger(__name__)

NAMESPACE = "ufme"
# Reads run concurrently with writes (the Shard's own locks order them); concurrent enrolments
# are what lets the log group-commit them into one durable write.
MAX_CONCURRENCY = 32


def shard_actor_name(shard_id: int) -> str:
    return f"ufme-shard-{shard_id}"


class ShardNotReadyError(RuntimeError):
    """The shard is still restoring (or failed to restore); try again later."""


class ShardActor:
    def __init__(self, settings_json: str, shard_id: int, dim: int):
        self._settings = UfmeSettings.model_validate_json(settings_json)
        self._shard_id = shard_id
        self._dim = dim
        self._shard: Shard | None = None
        self._error: str | None = None
        self._started = time.monotonic()
        tags = {"shard": str(shard_id)}
        self._ready_gauge = metrics.Gauge("ufme_shard_ready", "1 when the shard has restored its state", tag_keys=("shard",))
        self._size_gauge = metrics.Gauge("ufme_shard_templates", "live templates held by the shard", tag_keys=("shard",))
        self._restore_gauge = metrics.Gauge("ufme_shard_restore_seconds", "time the last restore took", tag_keys=("shard",))
        self._ready_gauge.set(0, tags)
        threading.Thread(target=self._restore, name=f"restore-shard-{shard_id}", daemon=True).start()

    def _restore(self) -> None:
        try:
            store = open_configured_storage(self._settings)
            self._shard = Shard.open(store, self._shard_id, self._settings.gallery.num_shards, self._dim, self._settings.gallery)
        except Exception as exc:  # reported through ready()/health(); the actor stays up to say why
            logger.exception("shard %d failed to restore", self._shard_id)
            self._error = f"{type(exc).__name__}: {exc}"
            return
        tags = {"shard": str(self._shard_id)}
        self._restore_gauge.set(time.monotonic() - self._started, tags)
        self._ready_gauge.set(1, tags)
        self._publish_size()

    def _ready_shard(self) -> Shard:
        if self._shard is None:
            reason = f"failed to restore: {self._error}" if self._error else "still restoring"
            raise ShardNotReadyError(f"shard {self._shard_id} is {reason}")
        return self._shard

    def _publish_size(self) -> None:
        if self._shard is not None:
            self._size_gauge.set(self._shard.stats().live_templates, {"shard": str(self._shard_id)})

    def ready(self) -> dict:
        return {"shard": self._shard_id, "ready": self._shard is not None, "error": self._error}

    def enrol(self, items: list[tuple[str, np.ndarray, float]]) -> list[tuple[int, int]]:
        """Durably enrol (subject_id, vector, quality) items; returns (template_id, seq) each."""
        result = self._ready_shard().enrol([Enrolment(subject, vector, quality) for subject, vector, quality in items])
        self._publish_size()
        return result

    def delete(self, subject_id: str) -> list[int]:
        erased = self._ready_shard().delete(subject_id)
        self._publish_size()
        return erased

    def search(self, queries: np.ndarray, k: int) -> list[list[SearchHit]]:
        return self._ready_shard().search(queries, k)

    def subject_scores(self, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
        return self._ready_shard().subject_scores(subject_id, queries)

    def templates(self, subject_id: str) -> list[TemplateInfo]:
        return self._ready_shard().templates(subject_id)

    def stats(self) -> dict:
        stats = asdict(self._ready_shard().stats())
        stats["ready"] = True
        return stats

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


def shard_handles(settings: UfmeSettings, dim: int, *, num_cpus: float, resources: dict[str, float] | None = None) -> list:
    """Get (or create) every shard actor. Idempotent across replicas and restarts."""
    remote = ray.remote(ShardActor)
    settings_json = settings.transport_json()
    return [
        remote.options(
            name=shard_actor_name(i),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_concurrency=MAX_CONCURRENCY,
            num_cpus=num_cpus,
            resources=resources or {},
        ).remote(settings_json, i, dim)
        for i in range(settings.gallery.num_shards)
    ]
