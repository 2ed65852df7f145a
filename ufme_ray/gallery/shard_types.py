"""What a `Shard` takes and returns, and the errors it raises; plain values, free of its machinery."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np


class WrongShardError(ValueError):
    """The subject routes to another shard (`routing.shard_for`)."""


class ShardFailedError(RuntimeError):
    """Applying durable events to memory failed; the shard must be reopened (the log is intact)."""


@dataclasses.dataclass(frozen=True)
class Enrolment:
    """One template to enrol. The vector is L2-normalised by the shard; `request` is the request
    key (`gallery.requests`) a retry of the same enrolment comes back with."""

    subject_id: str  # the subject's key in its gallery (`galleries.subject_key`)
    vector: np.ndarray
    quality: float = 1.0
    request: bytes | None = None
    generation: int = 0  # the gallery's incarnation it is enrolled into (`galleries`)


class SearchHit(NamedTuple):
    template_id: int
    subject_id: str
    score: float


class TemplateInfo(NamedTuple):
    template_id: int
    quality: float
    enrolled_at: float


@dataclasses.dataclass(frozen=True)
class ShardStats:
    shard: int
    num_shards: int
    snapshot_epoch: int
    watermark: int
    applied_seq: int
    writer_epoch: int
    index_kind: str
    snapshot_rows: int
    live_snapshot_rows: int
    delta_rows: int
    live_templates: int
    tombstoned_subjects: int
    resident_bytes: dict[str, int]
