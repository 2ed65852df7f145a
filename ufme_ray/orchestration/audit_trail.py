"""The audit trail as the gateway uses it: records carry the snapshot epochs in force and are
stored under subject pseudonyms; a record that cannot be written fails its request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ufme_ray.audit import AuditRecord, AuditWriter, SubjectPseudonyms, read_records
from ufme_ray.gallery.storage import ObjectStore
from ufme_ray.orchestration.errors import AuditUnavailableError, GalleryUnavailableError
from ufme_ray.orchestration.refusals import RefusalAggregator

logger = logging.getLogger(__name__)

# Audit records name the snapshot epochs that answered; shards change epoch only at compaction.
EPOCHS_REFRESH_S = 10.0


class AuditTrail:
    def __init__(
        self,
        store: ObjectStore,
        pseudonyms: SubjectPseudonyms,
        shard_status: Callable[[], Awaitable[list[dict]]],
        refusals: RefusalAggregator | None = None,
    ):
        self._store = store
        self._writer = AuditWriter(store)
        self._pseudonyms = pseudonyms
        self._shard_status = shard_status
        self._epochs: tuple[float, list[int]] = (float("-inf"), [])
        self._refusals = refusals or RefusalAggregator()
        self._aggregates: asyncio.Task | None = None

    async def _gallery_epochs(self) -> list[int]:
        fetched_at, epochs = self._epochs
        if time.monotonic() - fetched_at > EPOCHS_REFRESH_S:
            statuses = await self._shard_status()
            epochs = sorted({s["snapshot_epoch"] for s in statuses if s.get("snapshot_epoch") is not None})
            self._epochs = (time.monotonic(), epochs)
        return epochs

    async def record(self, record: AuditRecord) -> None:
        """Append durably; a failure to audit fails the request, never passes silently."""
        try:
            record = record.model_copy(update={"gallery_epochs": await self._gallery_epochs()})
        except GalleryUnavailableError:
            pass  # the record still goes in, without epochs: the gallery is what is unavailable
        try:
            await self._writer.record(self._pseudonyms.record(record))
        except Exception as exc:
            logger.exception("audit write failed")
            raise AuditUnavailableError(f"the audit trail cannot be written: {type(exc).__name__}") from exc

    async def refusal(self, record: AuditRecord) -> None:
        """A request refused before its operation ran: written whole, or counted into an aggregate."""
        first = self._refusals.offer(record)
        if self._aggregates is None or self._aggregates.done():
            self._aggregates = asyncio.create_task(self._write_aggregates())
        if first is not None:
            await self.record(first)

    async def _write_aggregates(self) -> None:
        """While refusals are being counted: write each window's aggregate when it ends."""
        while True:
            await asyncio.sleep(self._refusals.window_s / 4)
            await self._write_all(self._refusals.due(time.time()))
            if self._refusals.idle():
                return

    async def flush(self) -> None:
        """Write the aggregates of windows still open (the replica is stopping)."""
        if self._aggregates is not None:
            self._aggregates.cancel()
        await self._write_all(self._refusals.drain())

    async def _write_all(self, aggregates: list[AuditRecord]) -> None:
        for aggregate in aggregates:
            try:
                await self.record(aggregate)
            except AuditUnavailableError:
                logger.error("an aggregate of %d refusals could not be written", aggregate.count)

    async def page(
        self, *, since: float | None, until: float | None, operation: str | None, subject_id: str | None,
        offset: int, limit: int, gallery_id: str | None = None,
    ) -> tuple[list[AuditRecord], int]:
        """Records matching the filters, oldest first, and how many match in all."""
        if subject_id is not None:
            subject_id = self._pseudonyms(subject_id)
        return await asyncio.to_thread(
            read_records, self._store, since=since, until=until, operation=operation, subject_id=subject_id,
            gallery_id=gallery_id, offset=offset, limit=limit,
        )
