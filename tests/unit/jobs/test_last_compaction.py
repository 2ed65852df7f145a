"""A compaction run leaves its summary in storage for GET /api/v1/compaction; a storage failure
there never changes the run's outcome."""

from __future__ import annotations

import logging
from pathlib import Path

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.storage import StorageError, open_storage
from ufme_ray.jobs.compact import Compaction
from ufme_ray.orchestration.compactions import LAST_COMPACTION_KEY, read_last_compaction


def finished_run(tmp_path: Path) -> Compaction:
    run = Compaction(UfmeSettings(model_dir=tmp_path, data_dir=tmp_path, storage_uri=(tmp_path / "store").as_uri()), 8)
    summary = run.summary
    summary.status, summary.epoch, summary.previous_epoch, summary.duration_s = "compacted", 2, 1, 1.5
    summary.vectors_in, summary.vectors_out, summary.vectors_dropped, summary.swapped = 5, 4, 1, [0]
    summary.shards = [{"shard": 0, "watermark": 9, "vectors_in": 5, "vectors_out": 4, "kind": "exact"}]
    return run


def test_the_summary_is_recorded_with_the_time_it_finished(tmp_path: Path):
    store = open_storage((tmp_path / "store").as_uri())
    run = finished_run(tmp_path)
    run._record_last(store)
    last = read_last_compaction(store)
    assert (last.status, last.epoch, last.previous_epoch, last.vectors_dropped, last.swapped) == ("compacted", 2, 1, 1, [0])
    assert last.shards[0].watermark == 9 and last.retention is None and last.finished_at > 0


class UnwritableStore:
    def replace(self, key: str, data: bytes) -> None:
        raise StorageError(f"cannot write {key}")


def test_an_unwritable_summary_is_logged_not_raised(tmp_path: Path, caplog):
    with caplog.at_level(logging.ERROR, logger="ufme_ray.jobs.compact"):
        finished_run(tmp_path)._record_last(UnwritableStore())
    assert LAST_COMPACTION_KEY in caplog.text
