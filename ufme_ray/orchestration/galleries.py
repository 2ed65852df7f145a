"""Galleries as the engine serves them: the registry through the gallery port, each gallery's
policy laid over the engine's live config, and a short cache so a request costs no extra hop.

A change to a gallery (policy, deletion) reaches the Gateway replica that made it at once and
every other replica within `RECORD_TTL_S`. Deleting a gallery is three durable steps — mark it
deleting (it is refused from then on), erase its templates on every shard, purge it from the
registry — so a delete cut short is finished by sending it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from ufme_ray.config import LiveConfig
from ufme_ray.gallery import galleries as registry
from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.galleries import GalleryRecord
from ufme_ray.orchestration.errors import GalleryConflictError, InvalidGalleryPolicyError, UnknownGalleryError
from ufme_ray.orchestration.ports import Gallery

RECORD_TTL_S = 2.0


@dataclass(frozen=True)
class GalleryDeletion:
    gallery_id: str
    templates_erased: int


def check_policy(policy: dict) -> dict:
    """`policy` if it is a valid partial live config; InvalidGalleryPolicyError naming the field if not."""
    try:
        LiveConfig().overlay(policy)
    except ValidationError as exc:
        raise InvalidGalleryPolicyError(f"invalid gallery policy: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    return policy


def _domain(exc: registry.GalleryError) -> Exception:
    if isinstance(exc, registry.NoSuchGalleryError):
        return UnknownGalleryError(exc.gallery_id)
    return GalleryConflictError(exc.code, str(exc))


class GalleryDirectory:
    def __init__(self, gallery: Gallery, *, clock: Callable[[], float] = time.monotonic):
        self._gallery = gallery
        self._clock = clock
        self._cache: dict[str, tuple[float, GalleryRecord]] = {}

    async def record(self, gallery_id: str) -> GalleryRecord:
        """The gallery's record (cached for RECORD_TTL_S); UnknownGalleryError if it does not exist
        or is being deleted."""
        fetched_at, record = self._cache.get(gallery_id, (float("-inf"), None))
        if self._clock() - fetched_at > RECORD_TTL_S:
            record = await self._gallery.gallery(gallery_id)
            self._remember(gallery_id, record)
        if record is None or record.deleting:
            raise UnknownGalleryError(gallery_id)
        return record

    async def records(self, gallery_ids: Sequence[str]) -> list[GalleryRecord]:
        return [await self.record(gallery_id) for gallery_id in dict.fromkeys(gallery_ids)]

    async def _change(self, event: GalleryEvent) -> GalleryRecord | None:
        try:
            record = await self._gallery.change_gallery(event)
        except registry.GalleryError as exc:
            raise _domain(exc) from None
        self._remember(event.gallery_id, record)
        return record

    def _remember(self, gallery_id: str, record: GalleryRecord | None) -> None:
        # Only galleries that exist are kept: ids a client made up (or deleted ones) would grow the
        # cache without bound; the registry bounds the ones that exist (gallery.max_galleries).
        if record is None:
            self._cache.pop(gallery_id, None)
        else:
            self._cache[gallery_id] = (self._clock(), record)

    async def create(self, gallery_id: str, description: str, policy: dict) -> GalleryRecord:
        event = GalleryEvent(gallery_id, "create", time.time(), {"description": description, "policy": check_policy(policy)})
        return await self._change(event)

    async def update(self, gallery_id: str, *, description: str | None, policy: dict | None) -> GalleryRecord:
        details = {} if description is None else {"description": description}
        if policy is not None:
            details["policy"] = check_policy(policy)
        return await self._change(GalleryEvent(gallery_id, "update", time.time(), details))

    async def delete(self, gallery_id: str) -> GalleryDeletion:
        marked = await self._change(GalleryEvent(gallery_id, "delete", time.time()))
        erased = await self._gallery.erase_gallery(gallery_id, marked.generation)
        await self._change(GalleryEvent(gallery_id, "purge", time.time()))
        return GalleryDeletion(gallery_id, erased)

    async def listing(self) -> list[GalleryRecord]:
        return await self._gallery.galleries()
