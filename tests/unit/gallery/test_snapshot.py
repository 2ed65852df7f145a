from __future__ import annotations

import json

import numpy as np
import pytest

from ufme_ray.config import IndexSettings
from ufme_ray.gallery.epochs import next_epoch, publish_current, read_current, read_manifest, write_manifest
from ufme_ray.gallery.index import build_index
from ufme_ray.gallery.manifest import CorruptSnapshotError, part_key
from ufme_ray.gallery.snapshot import SnapshotRows, load_shard_snapshot, write_shard_snapshot
from ufme_ray.gallery.storage import ObjectStore
from tests.unit.gallery.conftest import face_like

SETTINGS = IndexSettings(exact_max_vectors=300, pq_bytes_per_vector=8, nprobe=64)


def rows_for(n: int, per_subject: int) -> SnapshotRows:
    subjects = [f"subject-{i:04d}" for i in range(n // per_subject)]
    return SnapshotRows(
        template_ids=np.arange(n, dtype=np.int64) + 100,
        quality=np.linspace(0, 1, n, dtype=np.float32),
        enrolled_at=np.arange(n, dtype=np.float64),
        subjects=subjects,
        starts=np.arange(0, n + 1, per_subject, dtype=np.int64),
    )


def publish(store: ObjectStore, n: int) -> tuple[int, np.ndarray]:
    vectors, _ = face_like(np.random.default_rng(n), n // 4, 4, 32)
    rows = rows_for(n, 4)
    epoch = next_epoch(store)
    index = build_index(vectors, rows.template_ids, SETTINGS)
    info = write_shard_snapshot(store, epoch, 0, index, rows, watermark=42, next_template_counter=1000)
    write_manifest(store, epoch, 1, 32, SETTINGS, [info])
    publish_current(store, epoch)
    return epoch, vectors


@pytest.mark.parametrize("n", [40, 1200], ids=["flat", "ivfpq"])
def test_snapshot_round_trip(store: ObjectStore, n: int, tmp_path) -> None:
    assert read_current(store) is None
    epoch, vectors = publish(store, n)
    assert read_current(store) == epoch == 1
    manifest = read_manifest(store, epoch)
    assert (manifest.num_shards, manifest.dim, manifest.shards[0].watermark) == (1, 32, 42)
    assert set(manifest.shards[0].parts) >= {"index", "rows.arrow", "json"}
    for rerank_dir in (None, tmp_path / "rerank"):  # in RAM, then memory-mapped
        snap = load_shard_snapshot(store, epoch, 0, SETTINGS, rerank_dir=rerank_dir)
        assert (snap.epoch, snap.watermark, snap.next_template_counter) == (1, 42, 1000)
        np.testing.assert_array_equal(snap.rows.template_ids, np.arange(n) + 100)
        assert snap.rows.subjects[3] == "subject-0003"
        assert snap.rows.subject_of_rows(np.array([0, 3, 4, n - 1])).tolist() == [0, 0, 1, n // 4 - 1]
        _, rows = snap.index.search(vectors[:5], 1)
        assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert next_epoch(store) == 2


@pytest.mark.parametrize("part", ["index", "rows.arrow", "json"])
def test_corrupt_part_is_refused(store: ObjectStore, part: str) -> None:
    epoch, _ = publish(store, 40)
    key = part_key(epoch, 0, part)
    data = bytearray(store.read(key))
    data[len(data) // 2] ^= 0x40
    store.delete([key])
    store.write(key, bytes(data))
    with pytest.raises(CorruptSnapshotError, match="sha256"):
        load_shard_snapshot(store, epoch, 0, SETTINGS)


def test_corrupt_rerank_vectors_are_refused_in_both_modes(store: ObjectStore, tmp_path) -> None:
    epoch, _ = publish(store, 1200)
    key = part_key(epoch, 0, "rerank.faiss")
    data = bytearray(store.read(key))
    data[-3] ^= 0x01
    store.delete([key])
    store.write(key, bytes(data))
    with pytest.raises(CorruptSnapshotError, match="sha256"):
        load_shard_snapshot(store, epoch, 0, SETTINGS)
    with pytest.raises(CorruptSnapshotError, match="sha256"):
        load_shard_snapshot(store, epoch, 0, SETTINGS, rerank_dir=tmp_path)


def test_missing_part_and_missing_manifest(store: ObjectStore) -> None:
    epoch, _ = publish(store, 40)
    store.delete([part_key(epoch, 0, "index")])
    with pytest.raises(CorruptSnapshotError, match="missing"):
        load_shard_snapshot(store, epoch, 0, SETTINGS)
    with pytest.raises(CorruptSnapshotError, match="no manifest"):
        load_shard_snapshot(store, 7, 0, SETTINGS)
    with pytest.raises(CorruptSnapshotError, match="no manifest"):
        publish_current(store, 7)
    assert read_current(store) == epoch


def test_manifest_tampering_is_detected(store: ObjectStore) -> None:
    epoch, _ = publish(store, 40)
    key = f"snapshots/{epoch:010d}/MANIFEST.json"
    manifest = json.loads(store.read(key))
    manifest["shards"][0]["watermark"] = 41
    store.delete([key])
    store.write(key, json.dumps(manifest).encode())
    with pytest.raises(CorruptSnapshotError, match="disagrees"):
        load_shard_snapshot(store, epoch, 0, SETTINGS)


def test_manifest_needs_every_shard(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="shards 0..1"):
        write_manifest(store, 1, 2, 32, SETTINGS, [])
