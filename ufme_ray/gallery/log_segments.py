"""One shard's log as stored: segment naming, listing, reading and deleting. Needs no writer.

The layout and the fencing rules it encodes are described on `ObjectStoreEventLog`. Compaction
reads (`LogReader`) and erases (`delete_segments_through`) through this module while the shard's
writer keeps appending.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator

from ufme_ray.gallery.events import CorruptSegmentError, Event, decode_segment
from ufme_ray.gallery.log import CorruptLogError
from ufme_ray.gallery.storage import ObjectStore

logger = logging.getLogger(__name__)


def log_prefix(shard: int) -> str:
    """Where shard `shard`'s log lies in the store."""
    return f"events/shard-{shard}"


_SEGMENT_RE = re.compile(r"^(\d{20})-(\d{20})-e(\d{10})\.seg$")
_CLAIM_RE = re.compile(r"^(\d{10})\.claim$")
_START_RE = re.compile(r"^(\d{10})\.start-(\d{20})$")
_TRUNCATED_RE = re.compile(r"^truncated-(\d{20})$")


@dataclasses.dataclass(frozen=True)
class SegmentName:
    key: str
    first_seq: int
    last_seq: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class LogListing:
    segments: list[SegmentName]  # the valid chain, in seq order
    fenced: list[SegmentName]  # written by superseded writers after their successor started
    claims: set[int]  # writer epochs ever claimed
    truncated_through: int  # segments through this seq were deleted by compaction
    starts: dict[int, int] = dataclasses.field(default_factory=dict)  # epoch -> first seq it writes

    @property
    def newest_claim_started(self) -> bool:
        """Whether the newest writer has recorded its start (or none ever claimed).

        Until it has, a segment its predecessor writes may yet turn out fenced, so a reader that
        applies events as they appear (a follower) waits for the start rather than guess.
        """
        return not self.claims or max(self.claims) in self.starts

    @property
    def last_seq(self) -> int:
        return max(self.segments[-1].last_seq if self.segments else 0, self.truncated_through)


class LogReader:
    """A read-only view of one shard's log as listed at construction; it claims no epoch.

    Compaction reads through it while the shard's writer keeps appending: segments written after
    the listing are not seen, so two reads of one reader return the same events.
    """

    def __init__(self, store: ObjectStore, shard: int, listing: LogListing | None = None) -> None:
        self._store = store
        self._shard = shard
        listing = listing or list_log(store, log_prefix(shard))
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
    prefix = log_prefix(shard)
    listing = list_log(store, prefix)
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


def list_claims(store: ObjectStore, prefix: str) -> list[int]:
    names = (key.rsplit("/", 1)[-1] for key in store.list(f"{prefix}/writers"))
    return [int(m.group(1)) for m in map(_CLAIM_RE.match, names) if m]


def list_log(store: ObjectStore, prefix: str) -> LogListing:
    segments: list[SegmentName] = []
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
            segments.append(SegmentName(key, int(m.group(1)), int(m.group(2)), int(m.group(3))))
        elif m := _TRUNCATED_RE.match(name):
            truncated_through = max(truncated_through, int(m.group(1)))
        else:
            logger.warning("ignoring unexpected object %s in the event log", key)
    valid: list[SegmentName] = []
    fenced: list[SegmentName] = []
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
    return LogListing(
        segments=valid, fenced=fenced, claims=claims, truncated_through=truncated_through, starts=starts
    )
