"""The Searcher deployment: routes writes to the owning shard, fans searches out to all shards.

It speaks galleries and subject ids; the shards speak subject keys (`gallery.galleries`).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.galleries import GalleryRecord, subject_key
from ufme_ray.gallery.routing import shard_for
from ufme_ray.serving.sequencer import sequencer_handle
from ufme_ray.serving.shard_actor import shard_handles
from ufme_ray.serving.shard_calls import call_shard, unwrap

REGISTRY_SHARD = 0

logger = logging.getLogger(__name__)


def wait_until_restored(shards: list, *, poll_s: float = 0.5, report_every_s: float = 10.0) -> None:
    """Block until every shard actor answers ready (restored); logs who it waits for meanwhile."""
    started = reported = time.monotonic()
    while True:
        try:
            states = ray.get([shard.ready.remote() for shard in shards], timeout=60)
        except (ActorUnavailableError, ActorDiedError, RayActorError, ray.exceptions.GetTimeoutError) as exc:
            states = [{"shard": None, "ready": False, "error": type(exc).__name__}]
        waiting = [s for s in states if not s["ready"]]
        if not waiting:
            logger.info("all %d shards restored after %.1f s", len(shards), time.monotonic() - started)
            return
        if time.monotonic() - reported > report_every_s:
            logger.info("waiting for shards to restore: %s", [(s["shard"], s["error"]) for s in waiting])
            reported = time.monotonic()
        time.sleep(poll_s)


@serve.deployment
class Searcher:
    def __init__(self, settings_json: str, embedding_dim: int, shard_num_cpus: float, shard_resources: dict | None = None):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._num_shards = settings.gallery.num_shards
        self._shards = shard_handles(settings, embedding_dim, num_cpus=shard_num_cpus, resources=shard_resources)
        self._sequencer = sequencer_handle(settings, embedding_dim, shard_num_cpus=shard_num_cpus, shard_resources=shard_resources)
        # Serve reports the application RUNNING only once every replica's constructor has returned,
        # and KubeRay moves a RayService's traffic to a new cluster only then: waiting here until
        # every shard has restored keeps a cluster whose gallery is still loading from looking ready.
        wait_until_restored(self._shards)

    def _owner(self, key: str):
        return self._shards[shard_for(key, self._num_shards)]

    async def enrol(
        self, gallery_id: str, generation: int, subject_id: str, vector: np.ndarray, quality: float, *,
        request: bytes | None = None, duplicates: DuplicateCheck | None = None,
    ) -> dict:
        """{template_id, shard, seq, duplicate_of}; screened enrolments pass through the sequencer."""
        key = subject_key(gallery_id, subject_id)
        if duplicates is not None:
            answer = await call_shard(self._sequencer.enrol.remote(key, generation, vector, quality, request, duplicates))
            duplicate = answer["duplicate_of"]
            return {**answer, "duplicate_of": None if duplicate is None else duplicate.named()}
        shard = shard_for(key, self._num_shards)
        [(template_id, seq)] = await call_shard(
            self._shards[shard].enrol.remote([(key, vector, quality, request, generation)])
        )
        return {"template_id": template_id, "shard": shard, "seq": seq, "duplicate_of": None}

    async def delete(self, gallery_id: str, subject_id: str) -> list[int]:
        key = subject_key(gallery_id, subject_id)
        return await call_shard(self._owner(key).delete.remote(key))

    async def templates(self, gallery_id: str, subject_id: str) -> list:
        key = subject_key(gallery_id, subject_id)
        return await call_shard(self._owner(key).templates.remote(key))

    async def subject_scores(self, gallery_id: str, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
        key = subject_key(gallery_id, subject_id)
        return await call_shard(self._owner(key).subject_scores.remote(key, queries))

    async def change_gallery(self, event: GalleryEvent) -> GalleryRecord | None:
        """Log a change to the registry (shard 0); the registry's refusals come back as raised."""
        return await call_shard(self._shards[REGISTRY_SHARD].change_gallery.remote(event))

    async def galleries(self) -> list[GalleryRecord]:
        return await call_shard(self._shards[REGISTRY_SHARD].galleries.remote())

    async def gallery(self, gallery_id: str) -> GalleryRecord | None:
        return await call_shard(self._shards[REGISTRY_SHARD].gallery.remote(gallery_id))

    async def erase_gallery(self, gallery_id: str, generation: int) -> int:
        """Erase the gallery's generation on every shard; returns how many templates went."""
        erased = await asyncio.gather(
            *(call_shard(shard.erase_gallery.remote(gallery_id, generation)) for shard in self._shards)
        )
        return sum(map(len, erased))

    async def gallery_counts(self, gallery_id: str) -> list[dict]:
        """Per shard: {shard, subjects, templates} of the gallery."""
        counts = await asyncio.gather(*(call_shard(shard.gallery_counts.remote(gallery_id)) for shard in self._shards))
        return [{"shard": i, **c} for i, c in enumerate(counts)]

    async def list_subjects(self, gallery_id: str, offset: int, limit: int) -> list[str]:
        """Subject ids of the gallery in order, `limit` of them from `offset`."""
        per_shard = await asyncio.gather(
            *(call_shard(shard.list_subjects.remote(gallery_id, offset + limit)) for shard in self._shards)
        )
        return sorted(s for subjects in per_shard for s in subjects)[offset : offset + limit]

    async def status(self) -> list[dict]:
        """Per shard: readiness and, when ready, its stats. Never raises for an unavailable shard."""

        async def one(index: int, shard) -> dict:
            try:
                ready = await shard.ready.remote()
                if not ready["ready"]:
                    return {"shard": index, "ready": False, "error": ready["error"]}
                return await shard.stats.remote()
            except (ActorUnavailableError, ActorDiedError, RayActorError, ray.exceptions.RayTaskError) as exc:
                return {"shard": index, "ready": False, "error": type(unwrap(exc)).__name__}

        return list(await asyncio.gather(*(one(i, shard) for i, shard in enumerate(self._shards))))
