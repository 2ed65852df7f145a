"""The per-shard event log: append-only, durable before acknowledgement, fenced by writer epoch.

Contract of every `EventLog`:
- `append(events)` gives the events consecutive sequence numbers, strictly increasing per shard
  with no gaps (the first event ever is 1), and returns them only once the events are durable. A
  batch is all-or-nothing: one segment holds it whole.
- `read(after_seq)` yields every event with seq > after_seq in seq order, or raises: a damaged
  segment raises `CorruptSegmentError` naming it, missing events raise `CorruptLogError`. Nothing
  is ever skipped silently.
- One writer per shard at a time. Opening a writer claims a new writer epoch; once a newer writer
  has claimed, an older writer's appends fail with `FencedError` and readers ignore any segment it
  manages to write after the newer writer started, so a stale writer never interleaves with the
  current one.
- After an append fails for any other reason its outcome is unknown, so the writer refuses further
  appends (`LogUnavailableError`): reopen the log (a new epoch) and replay.

`InMemoryEventLog` here is the test double; `object_log.ObjectStoreEventLog` is the real log, and
`log_segments` reads and trims the stored log without a writer.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import threading
from collections.abc import Iterator, Sequence

from ufme_ray.gallery.events import (
    CorruptSegmentError,
    DeleteEvent,
    EnrolEvent,
    EraseGalleryEvent,
    Event,
    EventLogError,
    GalleryEvent,
)

__all__ = [
    "CorruptLogError",
    "CorruptSegmentError",
    "EventLog",
    "EventLogError",
    "FencedError",
    "InMemoryEventLog",
    "InMemoryLogBackend",
    "LogUnavailableError",
    "check_events",
]


class FencedError(EventLogError):
    """A newer writer epoch owns this shard's log; this writer may no longer append.

    Raised by an append that raced with the takeover, the batch may or may not be in the log.
    """


class LogUnavailableError(EventLogError):
    """The writer is closed, or an earlier append failed with an unknown outcome: reopen the log."""


class CorruptLogError(EventLogError):
    """The log's segments do not form one gap-free sequence (missing, overlapping or deleted)."""


def check_events(events: Sequence[Event]) -> list[Event]:
    batch = list(events)
    if not batch:
        raise ValueError("append needs at least one event")
    for event in batch:
        if not isinstance(event, (EnrolEvent, DeleteEvent, GalleryEvent, EraseGalleryEvent)):
            raise TypeError(f"not a gallery event: {type(event).__name__}")
    return batch


class EventLog(abc.ABC):
    """One shard's append-only event log, held by its single writer. Thread-safe.

    Implementations set `_shard` and `_epoch` when they open the log.
    """

    _shard: int
    _epoch: int

    @property
    def shard(self) -> int:
        """The shard this log belongs to."""
        return self._shard

    @property
    def writer_epoch(self) -> int:
        """The fencing token claimed when this writer opened the log."""
        return self._epoch

    @property
    @abc.abstractmethod
    def last_seq(self) -> int:
        """The highest durable sequence number (0 for an empty log)."""

    @abc.abstractmethod
    def append(self, events: Sequence[Event]) -> list[int]:
        """Make `events` durable as one batch and return their sequence numbers.

        Blocks until the batch is durable. Raises FencedError, LogUnavailableError, StorageError.
        """

    async def append_async(self, events: Sequence[Event]) -> list[int]:
        """`append` from asyncio code, without blocking the event loop."""
        return await asyncio.to_thread(self.append, events)

    @abc.abstractmethod
    def read(self, after_seq: int = 0) -> Iterator[tuple[int, Event]]:
        """Every event with seq > after_seq, in seq order, as (seq, event).

        Raises CorruptSegmentError or CorruptLogError rather than skip anything.
        """

    @abc.abstractmethod
    def delete_through(self, watermark: int) -> int:
        """Erase every segment whose events all have seq <= watermark; returns how many.

        Compaction calls it once a snapshot covering `watermark` is current, so that deleted
        subjects' vectors leave storage. Afterwards `read(after_seq)` with after_seq below the
        oldest remaining event raises CorruptLogError.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Refuse further appends; pending ones finish first."""


@dataclasses.dataclass
class InMemoryLogBackend:
    """What an in-memory log keeps "in storage": shared by successive writers in tests."""

    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    records: list[tuple[int, Event]] = dataclasses.field(default_factory=list)
    epoch: int = 0
    deleted_through: int = 0


class InMemoryEventLog(EventLog):
    """The test double: a list under a lock, with the same contract and fencing as the real log."""

    def __init__(self, backend: InMemoryLogBackend | None = None, *, shard: int = 0) -> None:
        self._backend = backend or InMemoryLogBackend()
        self._shard = shard
        self._closed = False
        with self._backend.lock:
            self._backend.epoch += 1
            self._epoch = self._backend.epoch

    @property
    def last_seq(self) -> int:
        with self._backend.lock:
            return self._last_seq_locked()

    def _last_seq_locked(self) -> int:
        records = self._backend.records
        return records[-1][0] if records else self._backend.deleted_through

    def append(self, events: Sequence[Event]) -> list[int]:
        batch = check_events(events)
        with self._backend.lock:
            if self._closed:
                raise LogUnavailableError(f"shard {self._shard}: log writer is closed")
            if self._backend.epoch != self._epoch:
                raise FencedError(
                    f"shard {self._shard}: writer epoch {self._epoch} superseded by {self._backend.epoch}"
                )
            first = self._last_seq_locked() + 1
            seqs = list(range(first, first + len(batch)))
            self._backend.records.extend(zip(seqs, batch))
        return seqs

    def read(self, after_seq: int = 0) -> Iterator[tuple[int, Event]]:
        with self._backend.lock:
            if after_seq < self._backend.deleted_through:
                raise CorruptLogError(
                    f"shard {self._shard}: events up to {self._backend.deleted_through} were deleted, "
                    f"cannot read after {after_seq}"
                )
            selected = [(seq, event) for seq, event in self._backend.records if seq > after_seq]
        yield from selected

    def delete_through(self, watermark: int) -> int:
        with self._backend.lock:
            last = self._last_seq_locked()
            kept = [(seq, event) for seq, event in self._backend.records if seq > watermark]
            removed = len(self._backend.records) - len(kept)
            self._backend.records = kept
            self._backend.deleted_through = max(self._backend.deleted_through, min(watermark, last))
        return removed

    def close(self) -> None:
        with self._backend.lock:
            self._closed = True

