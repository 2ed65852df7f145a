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
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

from ufme_ray.config import LogSettings
from ufme_ray.gallery.events import (
    CorruptSegmentError,
    DeleteEvent,
    EnrolEvent,
    Event,
    EventLogError,
    decode_segment,
    encode_segment,
)
from ufme_ray.gallery.storage import ObjectExistsError, ObjectStore, StorageError

__all__ = [
    "CorruptLogError",
    "CorruptSegmentError",
    "EventLog",
    "EventLogError",
    "FencedError",
    "InMemoryEventLog",
    "InMemoryLogBackend",
    "LogReader",
    "LogUnavailableError",
    "ObjectStoreEventLog",
    "delete_segments_through",
]

logger = logging.getLogger(__name__)


class FencedError(EventLogError):
    """A newer writer epoch owns this shard's log; this writer may no longer append.

    Raised by an append that raced with the takeover, the batch may or may not be in the log.
    """


class LogUnavailableError(EventLogError):
    """The writer is closed, or an earlier append failed with an unknown outcome: reopen the log."""


class CorruptLogError(EventLogError):
    """The log's segments do not form one gap-free sequence (missing, overlapping or deleted)."""


def _check_events(events: Sequence[Event]) -> list[Event]:
    batch = list(events)
    if not batch:
        raise ValueError("append needs at least one event")
    for event in batch:
        if not isinstance(event, (EnrolEvent, DeleteEvent)):
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
        batch = _check_events(events)
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


_SEGMENT_RE = re.compile(r"^(\d{20})-(\d{20})-e(\d{10})\.seg$")
_CLAIM_RE = re.compile(r"^(\d{10})\.claim$")
_START_RE = re.compile(r"^(\d{10})\.start-(\d{20})$")
_TRUNCATED_RE = re.compile(r"^truncated-(\d{20})$")


@dataclasses.dataclass(frozen=True)
class _SegmentName:
    key: str
    first_seq: int
    last_seq: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class _LogListing:
    segments: list[_SegmentName]  # the valid chain, in seq order
    fenced: list[_SegmentName]  # written by superseded writers after their successor started
    claims: set[int]  # writer epochs ever claimed
    truncated_through: int  # segments through this seq were deleted by compaction

    @property
    def last_seq(self) -> int:
        return max(self.segments[-1].last_seq if self.segments else 0, self.truncated_through)


class _Pending:
    __slots__ = ("events", "seqs", "error", "done")

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.seqs: list[int] = []
        self.error: BaseException | None = None
        self.done = False


class ObjectStoreEventLog(EventLog):
    """The event log of one shard in an `ObjectStore`.

    Layout under `events/shard-<i>/`:
      `<first_seq>-<last_seq>-e<epoch>.seg`  immutable segments (numbers zero-padded)
      `writers/<epoch>.claim`                a writer claimed the epoch
      `writers/<epoch>.start-<seq>`          that writer listed the log after claiming; it writes
                                             from <seq> on, so a segment of an older epoch that
                                             starts at or after <seq> is fenced out.
      `truncated-<seq>`                      segments through <seq> were deleted (compaction), so
                                             sequence numbers continue after it even if no
                                             segment is left.

    A writer's segment is acknowledged only if, after the PUT, no newer claim exists. A newer writer
    claims first and lists second, so any segment acknowledged by the old writer is in its listing
    and below its start: acknowledged events are never fenced out.

    Group commit: concurrent `append` calls wait up to `group_commit_window_s` and share one
    segment (at most `group_commit_max_events` events), one storage round trip for all of them.
    """

    def __init__(self, store: ObjectStore, shard: int, settings: LogSettings, epoch: int, last_seq: int) -> None:
        self._store = store
        self._shard = shard
        self._settings = settings
        self._epoch = epoch
        self._last_seq = last_seq
        self._prefix = f"events/shard-{shard}"
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._queued_events = 0
        self._flushing = False
        self._failure: EventLogError | None = None

    @classmethod
    def open(cls, store: ObjectStore, shard: int, settings: LogSettings | None = None) -> "ObjectStoreEventLog":
        """Become the writer of shard `shard`'s log: claim the next epoch, then find the last seq.

        Any older writer is fenced from then on. Raises CorruptLogError if the existing segments
        do not form one chain, StorageError if the store fails.
        """
        if shard < 0:
            raise ValueError(f"shard must be >= 0, got {shard}")
        settings = settings or LogSettings()
        prefix = f"events/shard-{shard}"
        listing = _list_log(store, prefix)
        epoch = max(listing.claims, default=0) + 1
        while True:
            claim_key = f"{prefix}/writers/{epoch:010d}.claim"
            nonce = uuid.uuid4().hex
            body = json.dumps({"epoch": epoch, "nonce": nonce, "pid": os.getpid(), "time": time.time()})
            try:
                store.write(claim_key, body.encode())
            except ObjectExistsError:
                epoch += 1  # another opener took this epoch; the newest claim wins
                continue
            # On S3 the existence probe and the PUT are not atomic: read back to catch a racing claim.
            if json.loads(store.read(claim_key))["nonce"] != nonce:
                epoch += 1
                continue
            break
        last_seq = _list_log(store, prefix).last_seq
        store.write(f"{prefix}/writers/{epoch:010d}.start-{last_seq + 1:020d}", b"")
        logger.info("shard %d: log writer epoch %d opened at seq %d (%s)", shard, epoch, last_seq, store.uri)
        return cls(store, shard, settings, epoch, last_seq)

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._last_seq

    def append(self, events: Sequence[Event]) -> list[int]:
        pending = _Pending(_check_events(events))
        with self._cond:
            self._raise_if_failed()
            self._queue.append(pending)
            self._queued_events += len(pending.events)
            self._cond.notify_all()
        while True:
            with self._cond:
                while not pending.done and self._flushing:
                    self._cond.wait()
                if pending.done:
                    break
                self._flushing = True  # this caller leads the next group commit
            self._flush_group()
        if pending.error is not None:
            raise pending.error
        return pending.seqs

    def _flush_group(self) -> None:
        """Wait out the batching window, then make the queued appends durable as one segment."""
        group: list[_Pending] = []
        failure: EventLogError | None = None
        try:
            with self._cond:
                deadline = time.monotonic() + self._settings.group_commit_window_s
                while self._queued_events < self._settings.group_commit_max_events:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                group = self._take_group()
                first = self._last_seq + 1
                failure = self._failure
            if failure is None:
                failure = self._write_group(group, first)
        except BaseException as exc:
            failure = LogUnavailableError(f"shard {self._shard}: append failed ({exc!r}); reopen the log")
            raise
        finally:
            with self._cond:
                if failure is None:
                    seq = first
                    for item in group:
                        item.seqs = list(range(seq, seq + len(item.events)))
                        seq += len(item.events)
                    self._last_seq = seq - 1
                else:
                    self._failure = self._failure or failure
                for item in group:
                    item.error = self._failure if failure is not None else None
                    item.done = True
                self._flushing = False
                self._cond.notify_all()

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        count = 0
        limit = self._settings.group_commit_max_events
        while self._queue and (not group or count + len(self._queue[0].events) <= limit):
            item = self._queue.pop(0)
            group.append(item)
            count += len(item.events)
        self._queued_events -= count
        return group

    def _write_group(self, group: list[_Pending], first: int) -> EventLogError | None:
        events = [event for item in group for event in item.events]
        last = first + len(events) - 1
        key = f"{self._prefix}/{first:020d}-{last:020d}-e{self._epoch:010d}.seg"
        try:
            self._store.write(key, encode_segment(self._shard, self._epoch, first, events))
            newer = [e for e in _list_claims(self._store, self._prefix) if e > self._epoch]
        except StorageError as exc:
            logger.error("shard %d: append of seq %d..%d failed, writer disabled: %s", self._shard, first, last, exc)
            return LogUnavailableError(
                f"shard {self._shard}: append of seq {first}..{last} failed ({exc}); reopen the log"
            )
        if newer:
            logger.warning("shard %d: writer epoch %d fenced by epoch %d", self._shard, self._epoch, max(newer))
            return FencedError(
                f"shard {self._shard}: writer epoch {self._epoch} superseded by epoch {max(newer)}; "
                f"segment {key} may be ignored"
            )
        return None

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    def read(self, after_seq: int = 0) -> Iterator[tuple[int, Event]]:
        return LogReader(self._store, self._shard).read(after_seq)

    def delete_through(self, watermark: int) -> int:
        return delete_segments_through(self._store, self._shard, watermark)

    def close(self) -> None:
        with self._cond:
            while self._flushing or self._queue:
                self._cond.wait()
            self._failure = self._failure or LogUnavailableError(f"shard {self._shard}: log writer is closed")


class LogReader:
    """A read-only view of one shard's log as listed at construction; it claims no epoch.

    Compaction reads through it while the shard's writer keeps appending: segments written after
    the listing are not seen, so two reads of one reader return the same events.
    """

    def __init__(self, store: ObjectStore, shard: int) -> None:
        self._store = store
        self._shard = shard
        listing = _list_log(store, f"events/shard-{shard}")
        self._segments = listing.segments
        self._last_seq = listing.last_seq
        self._truncated_through = listing.truncated_through

    @property
    def last_seq(self) -> int:
        """The last seq in the listing (0 if the log is empty)."""
        return self._last_seq

    def read(self, after_seq: int = 0) -> Iterator[tuple[int, Event]]:
        """Every listed event with seq > after_seq, in order; see `EventLog.read` for errors."""
        if after_seq < self._truncated_through:
            raise CorruptLogError(
                f"shard {self._shard}: events through {self._truncated_through} were deleted by compaction, "
                f"cannot read after {after_seq}"
            )
        segments = [s for s in self._segments if s.last_seq > after_seq]
        if segments and segments[0].first_seq > after_seq + 1:
            raise CorruptLogError(
                f"shard {self._shard}: events {after_seq + 1}..{segments[0].first_seq - 1} are not in the log "
                f"(deleted by compaction or lost)"
            )
        for segment in segments:
            header, events = decode_segment(self._store.read(segment.key), segment.key)
            if (header.shard, header.writer_epoch, header.first_seq, header.last_seq) != (
                self._shard,
                segment.epoch,
                segment.first_seq,
                segment.last_seq,
            ):
                raise CorruptSegmentError(segment.key, f"header {header} does not match the segment's name")
            for seq, event in events:
                if seq > after_seq:
                    yield seq, event


def delete_segments_through(store: ObjectStore, shard: int, watermark: int) -> int:
    """Erase shard `shard`'s segments whose events all have seq <= watermark, and fenced segments.

    Needs no writer: compaction calls it once a snapshot through `watermark` is current and no
    shard can still be restoring from an older epoch (a retention window), since such a shard
    would need those events. Returns the number of segments deleted.
    """
    prefix = f"events/shard-{shard}"
    listing = _list_log(store, prefix)
    covered = [s for s in listing.segments if s.last_seq <= watermark]
    if covered and covered[-1].last_seq > listing.truncated_through:
        # Recorded first, so a writer opened after the deletion still continues after the last seq.
        store.write(f"{prefix}/truncated-{covered[-1].last_seq:020d}", b"")
    doomed = [s.key for s in covered]
    # Fenced segments are never read again; they may hold a deleted subject's vectors too.
    doomed += [s.key for s in listing.fenced]
    store.delete(doomed)
    logger.info("shard %d: deleted %d log segments through seq %d", shard, len(doomed), watermark)
    return len(doomed)


def _list_claims(store: ObjectStore, prefix: str) -> list[int]:
    names = (key.rsplit("/", 1)[-1] for key in store.list(f"{prefix}/writers"))
    return [int(m.group(1)) for m in map(_CLAIM_RE.match, names) if m]


def _list_log(store: ObjectStore, prefix: str) -> _LogListing:
    segments: list[_SegmentName] = []
    claims: set[int] = set()
    starts: dict[int, int] = {}  # epoch -> first seq that epoch's writer may write
    truncated_through = 0
    for key in store.list(prefix):
        name = key[len(prefix) + 1 :]
        if name.startswith("writers/"):
            leaf = name[len("writers/") :]
            if m := _CLAIM_RE.match(leaf):
                claims.add(int(m.group(1)))
            elif m := _START_RE.match(leaf):
                starts[int(m.group(1))] = int(m.group(2))
        elif m := _SEGMENT_RE.match(name):
            segments.append(_SegmentName(key, int(m.group(1)), int(m.group(2)), int(m.group(3))))
        elif m := _TRUNCATED_RE.match(name):
            truncated_through = max(truncated_through, int(m.group(1)))
        else:
            logger.warning("ignoring unexpected object %s in the event log", key)
    valid: list[_SegmentName] = []
    fenced: list[_SegmentName] = []
    for segment in segments:
        # A segment is valid unless a newer writer started at or before its first seq.
        boundary = min((s for e, s in starts.items() if e > segment.epoch), default=None)
        if boundary is not None and segment.first_seq >= boundary:
            fenced.append(segment)
        elif boundary is not None and segment.last_seq >= boundary:
            raise CorruptLogError(f"segment {segment.key} straddles the start {boundary} of a newer writer")
        else:
            valid.append(segment)
    valid.sort(key=lambda s: s.first_seq)
    for before, after in zip(valid, valid[1:]):
        if after.first_seq != before.last_seq + 1:
            raise CorruptLogError(f"segments {before.key} and {after.key} leave a gap or overlap")
    if valid and valid[0].first_seq > truncated_through + 1:
        raise CorruptLogError(
            f"segment {valid[0].key} starts after seq {truncated_through + 1}: earlier events are missing"
        )
    return _LogListing(segments=valid, fenced=fenced, claims=claims, truncated_through=truncated_through)
