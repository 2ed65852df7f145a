"""The event log of one shard in an object store: group commit and writer-epoch fencing."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

from ufme_ray.config import LogSettings
from ufme_ray.gallery.events import Event, EventLogError, encode_segment
from ufme_ray.gallery.log import EventLog, FencedError, LogUnavailableError, check_events
from ufme_ray.gallery.log_segments import LogReader, delete_segments_through, list_claims, list_log, log_prefix
from ufme_ray.gallery.storage import ObjectExistsError, ObjectStore, StorageError

logger = logging.getLogger(__name__)


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
        self._prefix = log_prefix(shard)
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
        prefix = log_prefix(shard)
        listing = list_log(store, prefix)
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
        last_seq = list_log(store, prefix).last_seq
        store.write(f"{prefix}/writers/{epoch:010d}.start-{last_seq + 1:020d}", b"")
        logger.info("shard %d: log writer epoch %d opened at seq %d (%s)", shard, epoch, last_seq, store.uri)
        return cls(store, shard, settings, epoch, last_seq)

    @property
    def last_seq(self) -> int:
        with self._cond:
            return self._last_seq

    def append(self, events: Sequence[Event]) -> list[int]:
        pending = _Pending(check_events(events))
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
            newer = [e for e in list_claims(self._store, self._prefix) if e > self._epoch]
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

    def superseded(self) -> bool:
        """Whether a newer writer has claimed this log since this one opened it."""
        return any(e > self._epoch for e in list_claims(self._store, self._prefix))

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
