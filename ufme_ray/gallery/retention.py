"""Retention: which snapshot epochs and log segments compaction deletes, and when (erasure).

A superseded epoch is kept for `retention_s` after its successor became current: a shard that
read CURRENT just before it moved may still be loading the old epoch, and will then replay its
log after the old watermark. Once an epoch A has been current for the whole window, every epoch
older than A and, per shard, every log segment through A's watermark are deleted. (An epoch's
MANIFEST is written just before CURRENT moves to it, so its `created_at` is when it became
current.) With the defaults and an hourly schedule this keeps the current and the previous epoch.

Erasure follows. A deleted subject's vectors and id live in the log segments up to its delete
event and in the epochs built before the delete was compacted. Once an epoch whose watermark
covers the delete has been current for `retention_s`, the next compaction deletes both; with
`retention_s` = 0 the compaction that covers the delete does it. Truncating through a watermark
leaves no event at or below it: every watermark a compaction records is the last seq of a
segment it listed (or of an earlier truncation), segments are immutable and the log never
splits one, so no segment straddles a watermark. Fenced segments are deleted too.

Abandoned epochs, left by a killed job, were never loaded by a shard: parts without a MANIFEST,
and any epoch above CURRENT (a job killed between its MANIFEST and CURRENT). Compaction deletes
them while it holds the lock, before it builds, so every remaining epoch with a MANIFEST below
CURRENT was current once and `created_at` is a true bound. Deleting an epoch removes its
MANIFEST first, so a deletion cut short leaves parts without a MANIFEST: abandoned, not corrupt.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from ufme_ray.gallery.epochs import read_current, read_manifest
from ufme_ray.gallery.log_segments import delete_segments_through
from ufme_ray.gallery.manifest import Manifest, epoch_prefix
from ufme_ray.gallery.storage import ObjectStore

logger = logging.getLogger(__name__)

_MANIFEST = "MANIFEST.json"


def list_epochs(store: ObjectStore) -> dict[int, list[str]]:
    """Every epoch that has any object under `snapshots/`, with its keys."""
    epochs: dict[int, list[str]] = {}
    for key in store.list("snapshots"):
        parts = key.split("/")
        if len(parts) >= 3 and len(parts[1]) == 10 and parts[1].isdigit():
            epochs.setdefault(int(parts[1]), []).append(key)
        else:
            logger.warning("ignoring unexpected object %s under snapshots/", key)
    return epochs


def _has_manifest(epoch: int, keys: list[str]) -> bool:
    return f"{epoch_prefix(epoch)}/{_MANIFEST}" in keys


def abandoned_epochs(epochs: dict[int, list[str]], current: int | None) -> list[int]:
    """Epochs no shard ever loaded: above CURRENT, or without a MANIFEST below it.

    Only meaningful while holding the compaction lock: otherwise an epoch above CURRENT may be
    another compaction's build in progress.
    """
    floor = current or 0
    return sorted(e for e, keys in epochs.items() if e > floor or (e < floor and not _has_manifest(e, keys)))


def delete_epochs(store: ObjectStore, epochs: dict[int, list[str]], doomed: list[int]) -> int:
    """Delete the listed epochs, each MANIFEST first; returns the number of objects deleted."""
    deleted = 0
    for epoch in doomed:
        keys = epochs[epoch]
        manifest = [k for k in keys if k == f"{epoch_prefix(epoch)}/{_MANIFEST}"]
        store.delete(manifest)
        store.delete([k for k in keys if k not in manifest])
        deleted += len(keys)
        logger.info("deleted snapshot epoch %d (%d objects)", epoch, len(keys))
    return deleted


@dataclasses.dataclass(frozen=True)
class RetentionPlan:
    """What retention deletes: whole epochs, and per shard the log through a watermark."""

    anchor: int | None  # the newest epoch current for the whole window; None: nothing is old enough
    delete_epochs: list[int]
    truncate_through: dict[int, int]  # shard -> watermark


def plan_retention(
    manifests: dict[int, Manifest | None], current: int, *, retention_s: float, now: float
) -> RetentionPlan:
    """Pure: given each epoch's manifest (None: abandoned parts) and CURRENT, what may go now.

    Epochs above CURRENT are never touched here (see `abandoned_epochs`). Raises ValueError if
    CURRENT has no manifest.
    """
    if retention_s < 0:
        raise ValueError(f"retention_s must be >= 0, got {retention_s}")
    if manifests.get(current) is None:
        raise ValueError(f"the current epoch {current} has no manifest")
    old_enough = [
        e for e, m in manifests.items() if m is not None and e <= current and now - m.created_at >= retention_s
    ]
    anchor = max(old_enough, default=None)
    doomed = {e for e, m in manifests.items() if e < current and m is None}
    truncate: dict[int, int] = {}
    if anchor is not None:
        doomed |= {e for e in manifests if e < anchor}
        truncate = {shard: info.watermark for shard, info in manifests[anchor].shards.items()}
    return RetentionPlan(anchor=anchor, delete_epochs=sorted(doomed), truncate_through=truncate)


@dataclasses.dataclass(frozen=True)
class RetentionReport:
    anchor: int | None
    epochs_deleted: list[int]
    objects_deleted: int
    segments_deleted: int
    truncated_through: dict[int, int]


def apply_retention(store: ObjectStore, *, retention_s: float, now: float | None = None) -> RetentionReport:
    """Delete what `plan_retention` allows for the store's current state.

    Call it holding the compaction lock, once every running shard serves CURRENT. Raises
    ValueError if nothing is current, CorruptSnapshotError for an unreadable MANIFEST (retention
    then stops rather than guess), StorageError if the store fails.
    """
    current = read_current(store)
    if current is None:
        raise ValueError(f"{store.uri}: no epoch is current, nothing to retain")
    epochs = list_epochs(store)
    manifests = {e: read_manifest(store, e) if _has_manifest(e, keys) else None for e, keys in epochs.items()}
    plan = plan_retention(manifests, current, retention_s=retention_s, now=time.time() if now is None else now)
    objects = delete_epochs(store, epochs, plan.delete_epochs)
    segments = sum(delete_segments_through(store, shard, mark) for shard, mark in sorted(plan.truncate_through.items()))
    logger.info(
        "retention %.0f s: anchor epoch %s, deleted epochs %s (%d objects) and %d log segments",
        retention_s, plan.anchor, plan.delete_epochs, objects, segments,
    )
    return RetentionReport(
        anchor=plan.anchor,
        epochs_deleted=plan.delete_epochs,
        objects_deleted=objects,
        segments_deleted=segments,
        truncated_through=plan.truncate_through,
    )
