"""Calls to the shard actors, with their failures as the orchestration knows them.

A shard that is restoring, restarting or unreachable answers GalleryUnavailableError (503 with
Retry-After) with a message written for clients; what actually happened (the Ray error, the log
writer's fencing) goes to the log, never into the answer.
"""

from __future__ import annotations

import logging

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ufme_ray.orchestration.errors import GalleryUnavailableError
from ufme_ray.serving.shard_actor import ShardHandedOverError, ShardNotReadyError

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
