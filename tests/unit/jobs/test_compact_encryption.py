"""The compaction summary counts the plaintext objects left while a gallery is being encrypted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tests.unit.gallery.conftest import unit_vectors
from ufme_ray.config import GallerySettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.encryption import EncryptedObjectStore, TemplateCipher
from ufme_ray.gallery.retention import apply_retention
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import open_storage
from ufme_ray.jobs.compact import Summary, plaintext_objects_left

DIM = 8
SETTINGS = GallerySettings(num_shards=1)


def test_plaintext_objects_left_is_counted_only_while_migrating(tmp_path: Path):
    raw = open_storage((tmp_path / "store").as_uri())
    shard = Shard.open(raw, 0, 1, DIM, SETTINGS)
    shard.enrol([Enrolment(f"s{i}", v) for i, v in enumerate(unit_vectors(np.random.default_rng(1), 4, DIM))])
    shard.close()
    cipher = TemplateCipher({"k1": os.urandom(32)}, "k1")
    migrating = EncryptedObjectStore(raw, cipher, accept_plaintext=True)

    assert plaintext_objects_left(raw) is None
    assert plaintext_objects_left(EncryptedObjectStore(raw, cipher)) is None
    assert plaintext_objects_left(migrating) == 1
    compact(migrating, num_shards=1, dim=DIM, settings=SETTINGS, work_dir=tmp_path)
    apply_retention(migrating, retention_s=0)
    assert plaintext_objects_left(migrating) == 0
    assert Summary(status="compacted", storage_uri="", namespace="").plaintext_objects_left is None
