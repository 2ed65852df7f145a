"""The Searcher deployment: routes writes to the owning shard, fans searches out to all shards."""

from __future__ import annotations

import asyncio

import numpy as np
import ray
from ray import serve
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.merge import Candidate, merge_subjects
from ufme_ray.gallery.routing import shard_for
from ufme_ray.serving.sequencer import sequencer_handle
from ufme_ray.serving.shard_actor import shard_handles
from ufme_ray.serving.shard_calls import call_shard, unwrap


@serve.deployment
class Searcher:
    def __init__(self, settings_json: str, embedding_dim: int, shard_num_cpus: float, shard_resources: dict | None = None):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._num_shards = settings.gallery.num_shards
        self._shards = shard_handles(settings, embedding_dim, num_cpus=shard_num_cpus, resources=shard_resources)
        self._sequencer = sequencer_handle(settings, embedding_dim, shard_num_cpus=shard_num_cpus, shard_resources=shard_resources)

    def _owner(self, subject_id: str):
        return self._shards[shard_for(subject_id, self._num_shards)]

    async def enrol(
        self, subject_id: str, vector: np.ndarray, quality: float, *, request: bytes | None = None,
        duplicates: DuplicateCheck | None = None,
    ) -> dict:
        """{template_id, shard, seq, duplicate_of}; screened enrolments pass through the sequencer."""
        if duplicates is not None:
            return await call_shard(self._sequencer.enrol.remote(subject_id, vector, quality, request, duplicates))
        shard = shard_for(subject_id, self._num_shards)
        [(template_id, seq)] = await call_shard(self._shards[shard].enrol.remote([(subject_id, vector, quality, request)]))
        return {"template_id": template_id, "shard": shard, "seq": seq, "duplicate_of": None}

    async def delete(self, subject_id: str) -> list[int]:
        return await call_shard(self._owner(subject_id).delete.remote(subject_id))

    async def templates(self, subject_id: str) -> list:
        return await call_shard(self._owner(subject_id).templates.remote(subject_id))

    async def subject_scores(self, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
        return await call_shard(self._owner(subject_id).subject_scores.remote(subject_id, queries))

    async def search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """Subject-level top_k per query over every shard; fails whole if any shard is not ready."""
        if len(queries) == 0:
            return []
        # Each shard answers its own top_k subjects, so the merge over them is the exact top_k.
        per_shard = await asyncio.gather(*(call_shard(shard.search_subjects.remote(queries, top_k)) for shard in self._shards))
        return [merge_subjects((hits[q] for hits in per_shard), top_k) for q in range(len(queries))]

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
