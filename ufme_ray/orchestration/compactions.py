"""The last compaction's summary in object storage: written by the compaction job (`jobs.compact`)
when a run ends, read by the API (operators see what the last run did without the job's log).

    compaction/last.json   LastCompaction, replaced by every run that took the lock
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ufme_ray.gallery.storage import ObjectNotFoundError, ObjectStore

LAST_COMPACTION_KEY = "compaction/last.json"


class ShardCompaction(BaseModel):
    shard: int
    watermark: int | None = Field(description="The last event seq the shard's new snapshot holds.")
    vectors_in: int
    vectors_out: int
    kind: str = Field(description="The index kind built (exact, ivfpq).")


class RetentionSummary(BaseModel):
    epochs_deleted: list[int]
    objects_deleted: int
    segments_deleted: int


class LastCompaction(BaseModel):
    """What the last compaction run did: the job's summary, less where it ran (storage URI,
    namespace), with the time it finished. Fields of the job's summary not named here are dropped."""

    status: str = Field(description="compacted or failed (a run that found another holding the lock is not recorded).")
    finished_at: float = Field(description="Unix time (s) the run ended.")
    duration_s: float
    epoch: int | None = Field(description="The epoch the run built (current once status is compacted).")
    previous_epoch: int | None
    vectors_in: int
    vectors_out: int
    vectors_dropped: int = Field(description="Templates of erased subjects and galleries dropped from storage.")
    shards: list[ShardCompaction]
    swapped: list[int] = Field(description="Shards that now serve the new epoch.")
    not_running: list[int] = Field(description="Shards that were not running; they load the epoch when they start.")
    retention: RetentionSummary | None
    error: str | None


def write_last_compaction(store: ObjectStore, summary: LastCompaction) -> None:
    store.replace(LAST_COMPACTION_KEY, summary.model_dump_json().encode())


def read_last_compaction(store: ObjectStore) -> LastCompaction | None:
    """The last recorded run, or None if no run has been recorded in this storage."""
    try:
        return LastCompaction.model_validate_json(store.read(LAST_COMPACTION_KEY))
    except ObjectNotFoundError:
        return None
