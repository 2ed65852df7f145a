"""Templates encrypted at rest: no raw vector bytes in any stored object; restore, compaction and
key rotation work on the encrypted store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.unit.gallery.conftest import unit_vectors
from ufme_ray.config import GallerySettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.encryption import EncryptedObjectStore, EncryptionError, TemplateCipher
from ufme_ray.gallery.epochs import read_current, read_manifest
from ufme_ray.gallery.log_segments import delete_segments_through
from ufme_ray.gallery.manifest import epoch_prefix
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment

DIM = 32
KEY_1, KEY_2 = os.urandom(32), os.urandom(32)


def cipher(current: str = "k1", chunk_bytes: int = 1000) -> TemplateCipher:
    return TemplateCipher({"k1": KEY_1, "k2": KEY_2}, current, chunk_bytes=chunk_bytes)


def raw_objects(store: EncryptedObjectStore) -> bytes:
    inner = store._inner
    return b"".join(inner.read(key) for key in inner.list(""))


def test_envelope_roundtrip_and_tamper(store):
    sealed = EncryptedObjectStore(store, cipher())
    payload = os.urandom(3500)  # four chunks of 1000 bytes
    sealed.write("events/shard-0/x.seg", payload)
    assert sealed.read("events/shard-0/x.seg") == payload
    raw = store.read("events/shard-0/x.seg")
    assert payload[:64] not in raw and raw.startswith(b"UFMEENC1")
    # Unprotected objects pass through untouched.
    sealed.write("CURRENT-test", b"plain")
    assert store.read("CURRENT-test") == b"plain"

    flipped = bytearray(raw)
    flipped[-5] ^= 1
    store.write("events/shard-0/flipped.seg", bytes(flipped))
    with pytest.raises(EncryptionError, match="authentication"):
        sealed.read("events/shard-0/flipped.seg")
    store.write("events/shard-0/cut.seg", raw[: len(raw) - 1020])
    with pytest.raises(EncryptionError):
        sealed.read("events/shard-0/cut.seg")
    # A valid envelope copied under another key is refused (the object key is bound in).
    store.write("events/shard-0/moved.seg", raw)
    with pytest.raises(EncryptionError):
        sealed.read("events/shard-0/moved.seg")


def test_files_roundtrip(file_store, tmp_path: Path):
    sealed = EncryptedObjectStore(file_store, cipher())
    source = tmp_path / "rerank.bin"
    source.write_bytes(os.urandom(5000))
    digest = sealed.write_file("snapshots/1/shard-0.rerank", source)
    target = tmp_path / "back.bin"
    assert sealed.read_to_file("snapshots/1/shard-0.rerank", target) == digest
    assert target.read_bytes() == source.read_bytes()


def test_unknown_key_is_a_clear_error(file_store):
    EncryptedObjectStore(file_store, cipher("k2")).write("events/shard-0/a.seg", b"x" * 10)
    only_k1 = EncryptedObjectStore(file_store, TemplateCipher({"k1": KEY_1}, "k1"))
    with pytest.raises(EncryptionError, match="'k2'"):
        only_k1.read("events/shard-0/a.seg")


def test_encrypted_gallery_restores_compacts_and_rotates(store, tmp_path: Path):
    settings = GallerySettings(num_shards=1)
    rng = np.random.default_rng(3)
    vectors = unit_vectors(rng, 40, DIM)
    sealed = EncryptedObjectStore(store, cipher("k1", chunk_bytes=4096))
    shard = Shard.open(sealed, 0, 1, DIM, settings)
    shard.enrol([Enrolment(f"s{i}", vectors[i]) for i in range(40)])
    shard.delete("s7")
    shard.close()

    raw = raw_objects(sealed)
    for vector in vectors[:5]:
        assert vector.tobytes() not in raw
        assert vector.astype(np.float16).tobytes() not in raw
    assert b"s12" not in raw  # subject ids live inside encrypted segments too

    restored = Shard.open(sealed, 0, 1, DIM, settings)
    hits = restored.search(vectors[:10], 1)
    assert hits[7][0].subject_id != "s7"
    assert all(h[0].subject_id == f"s{i}" for i, h in enumerate(hits) if i != 7)
    restored.close()

    # Rotation: k2 becomes current, k1 stays readable; compaction rewrites the gallery under k2.
    rotated = EncryptedObjectStore(store, cipher("k2", chunk_bytes=4096))
    (tmp_path / "work").mkdir()
    manifest = compact(rotated, num_shards=1, dim=DIM, settings=settings, work_dir=tmp_path / "work")
    delete_segments_through(rotated, 0, manifest.shards[0].watermark)
    snapshot_keys = store.list(epoch_prefix(manifest.epoch))
    assert snapshot_keys
    for key in snapshot_keys:
        assert b"k2" in store.read(key)[:16]
    remaining_segments = [k for k in store.list("events") if k.endswith(".seg")]
    assert all(b"k1" not in store.read(k)[:16] for k in remaining_segments)

    only_k2 = EncryptedObjectStore(store, TemplateCipher({"k2": KEY_2}, "k2"))
    assert read_current(only_k2) == manifest.epoch
    assert read_manifest(only_k2, manifest.epoch).num_shards == 1
    final = Shard.open(only_k2, 0, 1, DIM, settings)
    hits = final.search(vectors, 1)
    assert all(h[0].subject_id == f"s{i}" for i, h in enumerate(hits) if i != 7)
    assert all(h[0].subject_id != "s7" for h in hits)
    final.close()
