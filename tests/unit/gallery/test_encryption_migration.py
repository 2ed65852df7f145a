"""Turning encryption on for a gallery written without it (issue 19, item 11).

Refused by default with a message naming the migration; with `encryption.accept_plaintext` the
old plaintext objects are read, every new object is encrypted, and a compaction (plus retention)
rewrites the rest; once no plaintext is left and the setting is removed, a planted plaintext
object is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tests.unit.gallery.conftest import unit_vectors
from ufme_ray.config import EncryptionSettings, GallerySettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.encryption import (
    MAGIC,
    EncryptedObjectStore,
    EncryptionError,
    TemplateCipher,
    encryption_census,
)
from ufme_ray.gallery.events import EnrolEvent, encode_segment
from ufme_ray.gallery.log_segments import list_log, log_prefix
from ufme_ray.gallery.manifest import epoch_prefix
from ufme_ray.gallery.retention import apply_retention
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import ObjectStore

DIM = 16
KEY = os.urandom(32)
SETTINGS = GallerySettings(num_shards=1)


def sealed(store: ObjectStore, *, accept_plaintext: bool) -> EncryptedObjectStore:
    return EncryptedObjectStore(store, TemplateCipher({"k1": KEY}, "k1"), accept_plaintext=accept_plaintext)


def plaintext_gallery(store: ObjectStore, work: Path) -> np.ndarray:
    """A gallery written without encryption: a snapshot (epoch 1) and log events after it."""
    vectors = unit_vectors(np.random.default_rng(11), 30, DIM)
    shard = Shard.open(store, 0, 1, DIM, SETTINGS)
    shard.enrol([Enrolment(f"s{i}", vectors[i]) for i in range(20)])
    shard.delete("s3")
    shard.close()
    compact(store, num_shards=1, dim=DIM, settings=SETTINGS, work_dir=work)
    shard = Shard.open(store, 0, 1, DIM, SETTINGS)
    shard.enrol([Enrolment(f"s{i}", vectors[i]) for i in range(20, 30)])
    shard.delete("s25")
    shard.close()
    assert store.list(epoch_prefix(1)) and not any(store.read(k).startswith(MAGIC) for k in store.list(""))
    return vectors


def assert_serves(shard: Shard, vectors: np.ndarray, deleted: set[int]) -> None:
    hits = shard.search(vectors, 1)
    for i, found in enumerate(hits):
        if i in deleted:
            assert all(h.subject_id != f"s{i}" for h in found)
        else:
            assert found[0].subject_id == f"s{i}"


def test_turning_encryption_on_is_refused_by_default_with_the_migration_named(file_store, tmp_path: Path):
    plaintext_gallery(file_store, tmp_path)
    with pytest.raises(EncryptionError) as refused:
        Shard.open(sealed(file_store, accept_plaintext=False), 0, 1, DIM, SETTINGS)
    message = str(refused.value)
    assert "snapshots/0000000001/MANIFEST.json" in message and "not encrypted" in message
    assert "encryption.accept_plaintext" in message and "ufme-ray encryption status" in message


def test_plaintext_gallery_restores_with_encryption_on_and_new_objects_are_encrypted(store, tmp_path: Path):
    vectors = plaintext_gallery(store, tmp_path)
    before = set(store.list(""))
    migrating = sealed(store, accept_plaintext=True)
    shard = Shard.open(migrating, 0, 1, DIM, SETTINGS)
    assert_serves(shard, vectors, {3, 25})
    extra = unit_vectors(np.random.default_rng(12), 2, DIM)
    shard.enrol([Enrolment("s30", extra[0]), Enrolment("s31", extra[1])])
    shard.delete("s5")
    shard.close()
    assert migrating.plaintext_reads > 0

    written = sorted(set(store.list("")) - before)
    templates = [k for k in written if k.endswith(".seg")]
    assert templates, written
    for key in written:
        raw = store.read(key)
        if key.startswith(("events/", "snapshots/")):
            assert raw.startswith(MAGIC + b"\x00\x02k1"), key
        assert extra[0].tobytes() not in raw

    restored = Shard.open(migrating, 0, 1, DIM, SETTINGS)
    assert_serves(restored, np.concatenate([vectors, extra]), {3, 5, 25})
    restored.close()


def test_compaction_and_retention_leave_no_plaintext_then_plaintext_is_refused(store, tmp_path: Path):
    vectors = plaintext_gallery(store, tmp_path)
    migrating = sealed(store, accept_plaintext=True)
    census = encryption_census(migrating)
    assert census.plaintext and census.by_key_id == {}
    assert census.plaintext_current  # the current epoch and its log are plaintext: a restore needs them

    shard = Shard.open(migrating, 0, 1, DIM, SETTINGS)
    # An encrypted segment after the plaintext ones.
    shard.enrol([Enrolment("late", unit_vectors(np.random.default_rng(13), 1, DIM)[0])])
    shard.close()
    manifest = compact(migrating, num_shards=1, dim=DIM, settings=SETTINGS, work_dir=tmp_path)
    census = encryption_census(migrating)
    assert census.plaintext and not census.plaintext_current  # the old epoch awaits retention
    apply_retention(migrating, retention_s=0)

    census = encryption_census(migrating)
    assert census.plaintext == [] and census.by_key_id["k1"] > 0
    assert census.current_epoch == manifest.epoch
    for key in store.list("snapshots") + [k for k in store.list("events") if k.endswith(".seg")]:
        assert store.read(key).startswith(MAGIC), key

    # Migration over: accept_plaintext removed. The gallery restores; a planted plaintext segment is refused.
    strict = sealed(store, accept_plaintext=False)
    shard = Shard.open(strict, 0, 1, DIM, SETTINGS)
    assert_serves(shard, vectors, {3, 25})
    last = shard._log.last_seq
    shard.close()
    planted = EnrolEvent(template_id=999, subject_id="intruder", vector=vectors[3], quality=1.0, timestamp=0.0)
    key = f"{log_prefix(0)}/{last + 1:020d}-{last + 1:020d}-e{max(list_log(store, log_prefix(0)).claims):010d}.seg"
    store.write(key, encode_segment(0, max(list_log(store, log_prefix(0)).claims), last + 1, [planted]))
    with pytest.raises(EncryptionError, match=f"{key}.*not encrypted.*planted"):
        Shard.open(strict, 0, 1, DIM, SETTINGS)
    assert encryption_census(strict).plaintext == [key]


def test_settings_default_refuses_plaintext():
    assert EncryptionSettings().accept_plaintext is False
    settings = EncryptionSettings(key_id="k1", keys={"k1": "a" * 44}, accept_plaintext=True)
    assert settings.accept_plaintext


def test_streamed_reads_of_plaintext_follow_the_same_rule(file_store, tmp_path: Path):
    """Rerank stores are streamed to a local file (read_to_file), not read whole."""
    payload = os.urandom(5000)
    file_store.write("snapshots/0000000001/shard-0.rerank.faiss", payload)
    target = tmp_path / "rerank.faiss"
    with pytest.raises(EncryptionError, match="not encrypted"):
        sealed(file_store, accept_plaintext=False).read_to_file("snapshots/0000000001/shard-0.rerank.faiss", target)
    assert not target.exists() and list(tmp_path.glob(".*sealed")) == []
    migrating = sealed(file_store, accept_plaintext=True)
    digest = migrating.read_to_file("snapshots/0000000001/shard-0.rerank.faiss", target)
    assert target.read_bytes() == payload and digest == hashlib.sha256(payload).hexdigest()
    assert migrating.read_head("snapshots/0000000001/shard-0.rerank.faiss", 4) == payload[:4]
