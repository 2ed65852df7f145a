"""Retention: the pure plan, then the real thing on file:// and S3 (erasure end to end)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ufme_ray.config import GallerySettings, IndexSettings, LogSettings
from ufme_ray.gallery.build import ShardBuild, build_memory_bytes, build_snapshot, compact
from ufme_ray.gallery.epochs import read_current
from ufme_ray.gallery.index import IndexParams
from ufme_ray.gallery.log_segments import LogReader
from ufme_ray.gallery.manifest import Manifest, ShardSnapshotInfo
from ufme_ray.gallery.retention import (
    abandoned_epochs,
    apply_retention,
    delete_epochs,
    list_epochs,
    plan_retention,
)
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import ObjectStore
from tests.unit.gallery.conftest import unit_vectors

DIM = 16
ONE = GallerySettings(num_shards=1, log=LogSettings(group_commit_window_s=0.001))
IVF = ONE.model_copy(update={"index": IndexSettings(exact_max_vectors=200, pq_bytes_per_vector=4, nprobe=64)})
NOW = 1_000_000.0


def manifest(epoch: int, created_at: float, watermarks: list[int]) -> Manifest:
    shards = {
        shard: ShardSnapshotInfo(shard, mark, 1, 0, IndexParams(kind="flat", dim=DIM), {})
        for shard, mark in enumerate(watermarks)
    }
    return Manifest(epoch, len(watermarks), DIM, {}, created_at, shards)


def test_retention_zero_keeps_only_the_current_epoch() -> None:
    manifests = {1: manifest(1, NOW - 50, [5, 7]), 2: None, 3: manifest(3, NOW - 1, [9, 12])}
    plan = plan_retention(manifests, 3, retention_s=0, now=NOW)
    assert (plan.anchor, plan.delete_epochs, plan.truncate_through) == (3, [1, 2], {0: 9, 1: 12})


def test_a_superseded_epoch_stays_for_the_window() -> None:
    # Hourly runs: epoch 2 became current 2 h ago, epoch 3 1 h ago (exactly), epoch 4 just now.
    manifests = {e: manifest(e, NOW - 3600 * (4 - e), [10 * e]) for e in (1, 2, 3, 4)}
    plan = plan_retention(manifests, 4, retention_s=3600, now=NOW)
    assert (plan.anchor, plan.delete_epochs, plan.truncate_through) == (3, [1, 2], {0: 30})
    # A moment earlier epoch 3 had not been current for the whole window yet.
    plan = plan_retention(manifests, 4, retention_s=3600, now=NOW - 1)
    assert (plan.anchor, plan.delete_epochs, plan.truncate_through) == (2, [1], {0: 20})


def test_nothing_old_enough_still_deletes_abandoned_parts_but_never_above_current() -> None:
    manifests = {1: None, 2: manifest(2, NOW - 10, [4]), 3: None, 4: manifest(4, NOW - 5, [6])}
    plan = plan_retention(manifests, 2, retention_s=3600, now=NOW)
    assert (plan.anchor, plan.delete_epochs, plan.truncate_through) == (None, [1], {})
    plan = plan_retention(manifests, 2, retention_s=0, now=NOW)
    assert (plan.anchor, plan.delete_epochs) == (2, [1])


def test_plan_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="retention_s"):
        plan_retention({1: manifest(1, NOW, [1])}, 1, retention_s=-1, now=NOW)
    with pytest.raises(ValueError, match="no manifest"):
        plan_retention({1: None}, 1, retention_s=0, now=NOW)


def test_abandoned_epochs() -> None:
    epochs = {
        1: ["snapshots/0000000001/shard-0.index"],
        2: ["snapshots/0000000002/MANIFEST.json", "snapshots/0000000002/shard-0.index"],
        3: ["snapshots/0000000003/MANIFEST.json"],
        4: ["snapshots/0000000004/shard-0.index"],
    }
    assert abandoned_epochs(epochs, 2) == [1, 3, 4]
    assert abandoned_epochs(epochs, None) == [1, 2, 3, 4]


def test_build_memory_hint_and_dropped_count() -> None:
    assert build_memory_bytes(1_000_000, 512) == 3 * 2_048_000_000 + (384 << 20)
    with pytest.raises(ValueError):
        build_memory_bytes(-1, 512)
    info = ShardSnapshotInfo(0, 10, 1, 7, IndexParams(kind="flat", dim=DIM), {})
    assert ShardBuild(info=info, vectors_in=10).vectors_dropped == 3


def blob_of(store: ObjectStore) -> bytes:
    return b"".join(store.read(key) for key in store.list(""))


@pytest.mark.parametrize("settings", [ONE, IVF], ids=["flat", "ivfpq"])
def test_erasure_after_retention(store: ObjectStore, tmp_path: Path, settings: GallerySettings) -> None:
    rng = np.random.default_rng(1)
    shard = Shard.open(store, 0, 1, DIM, settings)
    crowd = unit_vectors(rng, 300, DIM)
    shard.enrol([Enrolment(f"p{i}", v) for i, v in enumerate(crowd)])
    secret = unit_vectors(rng, 2, DIM)
    shard.enrol([Enrolment("erase-me", v) for v in secret])
    first = compact(store, num_shards=1, dim=DIM, settings=settings, work_dir=tmp_path)
    shard.swap_to(first.epoch)
    shard.delete("erase-me")
    # Appends racing with the build land beyond its watermark and must survive the truncation.
    racing = threading.Thread(target=lambda: [shard.enrol([Enrolment(f"late{i}", v)]) for i, v in enumerate(crowd[:20])])
    racing.start()
    second = compact(store, num_shards=1, dim=DIM, settings=settings, work_dir=tmp_path)
    racing.join()
    shard.swap_to(second.epoch)
    stored = [e.vector for _, e in LogReader(store, 0).read(0) if getattr(e, "subject_id", "") == "erase-me" and hasattr(e, "vector")]
    assert len(stored) == 2 and b"erase-me" in blob_of(store)

    young = apply_retention(store, retention_s=3600, now=second.created_at + 60)
    assert (young.anchor, young.epochs_deleted, young.segments_deleted) == (None, [], 0)
    # An hour after the first epoch became current, but not yet after the second did.
    between = first.created_at + 3600 + (second.created_at - first.created_at) / 2
    window = apply_retention(store, retention_s=3600, now=between)
    assert (window.anchor, window.epochs_deleted) == (first.epoch, [])
    assert window.truncated_through == {0: first.shards[0].watermark} and window.segments_deleted > 0
    held = stored[0].astype(np.float16) if settings is IVF else stored[0]  # the rerank store is float16
    assert held.tobytes() in blob_of(store)  # epoch 1 still holds the face
    report = apply_retention(store, retention_s=0)
    assert (report.anchor, report.epochs_deleted) == (second.epoch, [first.epoch])
    assert report.truncated_through == {0: second.shards[0].watermark} and report.segments_deleted > 0

    blob = blob_of(store)
    for vector in stored:
        assert vector.tobytes() not in blob
        assert vector.astype(np.float16).tobytes() not in blob
    assert b"erase-me" not in blob
    restored = Shard.open(store, 0, 1, DIM, settings)
    assert restored.stats().live_templates == shard.stats().live_templates == 320
    assert [t.template_id for t in restored.templates("late19")] == [t.template_id for t in shard.templates("late19")]


def test_abandoned_epoch_is_deleted_manifest_first(
    file_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = Shard.open(file_store, 0, 1, DIM, ONE)
    shard.enrol([Enrolment("a", unit_vectors(np.random.default_rng(2), 1, DIM)[0])])
    live = compact(file_store, num_shards=1, dim=DIM, settings=ONE, work_dir=tmp_path)
    build_snapshot(file_store, 0, live.epoch + 1, num_shards=1, dim=DIM, settings=ONE, work_dir=tmp_path)
    # The abandoned epoch gets a MANIFEST too, so that the order of deletion can be seen.
    abandoned = live.epoch + 1
    manifest_key = f"snapshots/{abandoned:010d}/MANIFEST.json"
    file_store.write(manifest_key, file_store.read(f"snapshots/{live.epoch:010d}/MANIFEST.json"))
    epochs = list_epochs(file_store)
    assert manifest_key in epochs[abandoned] and len(epochs[abandoned]) > 1
    doomed = abandoned_epochs(epochs, read_current(file_store))
    assert doomed == [abandoned]
    deleted_in_order: list[str] = []
    real_delete = file_store.delete

    def recording_delete(keys):
        keys = list(keys)
        for key in keys:
            # The MANIFEST goes in a call of its own, before any other object of its epoch.
            assert key == manifest_key or manifest_key in deleted_in_order, f"{key} deleted before the MANIFEST"
        if manifest_key in keys:
            assert keys == [manifest_key]
        deleted_in_order.extend(keys)
        real_delete(keys)

    monkeypatch.setattr(file_store, "delete", recording_delete)
    assert delete_epochs(file_store, epochs, doomed) == len(epochs[abandoned])
    assert deleted_in_order[0] == manifest_key
    assert sorted(deleted_in_order) == sorted(epochs[abandoned])
    assert sorted(list_epochs(file_store)) == [live.epoch]
    assert Shard.open(file_store, 0, 1, DIM, ONE).stats().snapshot_epoch == live.epoch
