"""Calls to the shard actors, with their failures as the orchestration knows them.

A shard that is restoring, restarting or unreachable answers GalleryUnavailableError (503 with
Retry-After) with a message written for clients; what actually happened (the Ray error, the log
writer's fencing) goes to the log, never into the answer.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ufme_ray.gallery.merge import Candidate, merge_subjects
from ufme_ray.orchestration.errors import GalleryUnavailableError
from ufme_ray.serving.shard_actor import NAMESPACE, ShardHandedOverError, ShardNotReadyError, shard_actor_name

logger = logging.getLogger(__name__)

NOT_READY = "the gallery is not ready: a shard is restoring or restarting; retry in a few seconds"
HANDED_OVER = (
    "this deployment is being replaced and no longer takes changes; retry in a few seconds (the new one will)"
)


def unwrap(exc: BaseException) -> BaseException:
    return exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None else exc


async def call_shard(ref):
    """Await a shard call; a not-ready or unreachable shard becomes GalleryUnavailableError."""
    try:
        return await ref
    except (ActorUnavailableError, ActorDiedError, RayActorError) as exc:
        logger.warning("a shard call failed: %s", type(exc).__name__)
        raise GalleryUnavailableError(NOT_READY) from None
    except ray.exceptions.RayTaskError as exc:
        cause = unwrap(exc)
        if isinstance(cause, ShardNotReadyError):
            logger.info("a shard is not ready: %s", cause)
            raise GalleryUnavailableError(HANDED_OVER if isinstance(cause, ShardHandedOverError) else NOT_READY) from None
        raise cause from None


class ShardDirectory:
    """Every shard actor by name, for callers that do not create them (the Searcher does). Looked up
    on first use and again after a failed call, as a shard may have been created anew."""

    def __init__(self, num_shards: int, namespace: str = NAMESPACE):
        self._names = [shard_actor_name(i) for i in range(num_shards)]
        self._namespace = namespace
        self._shards: list | None = None

    async def search(self, queries: np.ndarray, top_k: int, galleries: list[str]) -> list[list[Candidate]]:
        """Subject-level top_k per query over `galleries` on every shard; GalleryUnavailableError
        while any shard does not exist yet or is not ready. Each candidate names its gallery."""
        if len(queries) == 0:
            return []
        if self._shards is None:
            try:
                self._shards = await asyncio.to_thread(
                    lambda: [ray.get_actor(name, namespace=self._namespace) for name in self._names]
                )
            except ValueError:
                raise GalleryUnavailableError(NOT_READY) from None
        try:
            # Each shard answers its own top_k subjects, so the merge over them is the exact top_k.
            per_shard = await asyncio.gather(
                *(call_shard(shard.search_subjects.remote(queries, top_k, galleries)) for shard in self._shards)
            )
        except GalleryUnavailableError:
            self._shards = None
            raise
        return [[c.named() for c in merge_subjects((hits[q] for hits in per_shard), top_k)] for q in range(len(queries))]
