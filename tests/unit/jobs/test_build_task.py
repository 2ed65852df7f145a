"""The build task's body, called directly (no cluster): it opens storage as the shards do."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.encryption import open_configured_storage
from ufme_ray.gallery.manifest import epoch_prefix
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import open_storage
from ufme_ray.jobs.build import build_shard
from tests.unit.gallery.conftest import unit_vectors

DIM = 16


def test_build_task_rewrites_templates_under_the_current_key(tmp_path: Path):
    keys = {"k1": base64.b64encode(os.urandom(32)).decode(), "k2": base64.b64encode(os.urandom(32)).decode()}
    uri = (tmp_path / "store").as_uri()

    def settings(current: str) -> UfmeSettings:
        return UfmeSettings.load(
            storage_uri=uri,
            gallery={"num_shards": 1},
            encryption={"key_id": current, "keys": keys},
            compaction={"work_dir": str(tmp_path)},
        )

    shard = Shard.open(open_configured_storage(settings("k1")), 0, 1, DIM, settings("k1").gallery)
    vectors = unit_vectors(np.random.default_rng(0), 30, DIM)
    shard.enrol([Enrolment(f"s{i}", v) for i, v in enumerate(vectors)])
    shard.delete("s3")
    shard.close()

    built = build_shard(settings("k2").transport_json(), 0, 1, dim=DIM)
    assert (built.vectors_in, built.info.count, built.vectors_dropped) == (30, 29, 1)
    raw = open_storage(uri)
    parts = raw.list(epoch_prefix(1))
    assert parts and all(raw.read(key)[:12] == b"UFMEENC1\x00\x02k2" for key in parts)
    assert all(vector.tobytes() not in raw.read(key) for key in parts for vector in vectors)
