"""A shard's log as seen by a process that serves it without writing: it follows the writer.

During a KubeRay upgrade two clusters serve one gallery for a while: the old one takes the traffic
while the new one restores. The new cluster's shards restore as followers (no writer claim, so the
old cluster keeps writing undisturbed) and apply the old writer's segments as they appear; the
first request that reaches a follower makes it the writer (`Shard.take_writer`), which fences the
old cluster. A writer that finds itself fenced becomes a follower again (`Shard.hand_over`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence

from ufme_ray.gallery.events import Event
from ufme_ray.gallery.log import EventLog, EventLogError
from ufme_ray.gallery.log_segments import LogListing, LogReader, delete_segments_through, list_log, log_prefix
from ufme_ray.gallery.storage import ObjectStore, StorageError

logger = logging.getLogger(__name__)

# A writer records its start within moments of its claim; a claim left without one for this long
# belongs to a writer that died in between, and no longer holds readers back.
CLAIM_SETTLE_S = 30.0


class NotWriterError(EventLogError):
    """This log is followed, not written: the shard must take the writer claim first."""


class LogFollower(EventLog):
    """The read side of shard `shard`'s log in an object store; it claims no writer epoch.

    `read(after_seq)` lists the log afresh each time, and yields nothing new while the newest
    writer has claimed but not yet recorded where it starts: until then a segment of its
    predecessor may still be fenced out, and a follower must never apply an event it would have to
    take back.
    """

    def __init__(self, store: ObjectStore, shard: int) -> None:
        self._store = store
        self._shard = shard
        self._epoch = 0
        self._last_seq = 0

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def append(self, events: Sequence[Event]) -> list[int]:
        raise NotWriterError(f"shard {self._shard}: this process follows the log and holds no writer claim")

    def read(self, after_seq: int = 0) -> Iterator[tuple[int, Event]]:
        listing = list_log(self._store, log_prefix(self._shard))
        if not self._settled(listing):
            return iter(())
        reader = LogReader(self._store, self._shard, listing)
        self._last_seq = max(self._last_seq, reader.last_seq)
        return reader.read(after_seq)

    def _settled(self, listing: LogListing) -> bool:
        if listing.newest_claim_started:
            return True
        newest = max(listing.claims)
        try:
            claimed_at = json.loads(self._store.read(f"{log_prefix(self._shard)}/writers/{newest:010d}.claim"))["time"]
        except (StorageError, ValueError, KeyError) as exc:
            logger.warning("shard %d: cannot read writer claim %d (%s); waiting for its start", self._shard, newest, exc)
            return False
        return time.time() - claimed_at > CLAIM_SETTLE_S

    def delete_through(self, watermark: int) -> int:
        return delete_segments_through(self._store, self._shard, watermark)

    def close(self) -> None:
        """Nothing to flush: a follower never appends."""
