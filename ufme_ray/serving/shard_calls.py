"""Calls to the shard actors, with their failures as the orchestration knows them."""

from __future__ import annotations

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from ufme_ray.orchestration.errors import GalleryUnavailableError
from ufme_ray.serving.shard_actor import ShardNotReadyError


def unwrap(exc: BaseException) -> BaseException:
    return exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None else exc


async def call_shard(ref):
    """Await a shard call; a not-ready or unreachable shard becomes GalleryUnavailableError."""
    try:
        return await ref
    except (ActorUnavailableError, ActorDiedError, RayActorError) as exc:
        raise GalleryUnavailableError(f"a gallery shard is unavailable: {type(exc).__name__}") from None
    except ray.exceptions.RayTaskError as exc:
        cause = unwrap(exc)
        if isinstance(cause, ShardNotReadyError):
            raise GalleryUnavailableError(str(cause)) from None
        raise cause from None
