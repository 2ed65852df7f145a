"""The quota actor: one named actor per cluster holds every key's token bucket, so a key's quota
holds across all Gateway replicas (each rated request takes its token here, one at a time, in
arrival order: exact up to the bucket arithmetic). Keys without a quota never reach it.

Restarted by Ray after a crash, it starts with full buckets: a key may then send one burst more.
Unreachable (down, restarting, slower than `CALL_TIMEOUT_S`; a newly created one first gets
`START_TIMEOUT_S` to start its worker), the Gateway lets rated requests through (fails open) for
`OPEN_FOR_S`, then tries again: the key itself is still checked (auth fails closed), only its
quota, which protects capacity and not access, is not.
"""

from __future__ import annotations

import asyncio
import logging
import time

import ray

from ufme_ray.orchestration.ratelimit import RateLimit, TokenBuckets
from ufme_ray.serving.shard_actor import NAMESPACE

logger = logging.getLogger(__name__)

RATE_LIMITER_NAME = "ufme-rate-limiter"
CALL_TIMEOUT_S = 1.0
START_TIMEOUT_S = 30.0
OPEN_FOR_S = 5.0


class RateLimiterActor:
    def __init__(self) -> None:
        self._buckets = TokenBuckets()

    def take(self, key_id: str, rate: float, burst: int) -> float:
        return self._buckets.take(key_id, RateLimit(rate, burst))


def rate_limiter_handle(namespace: str = NAMESPACE):
    """Get (or create) the cluster's quota actor in `namespace`; idempotent across replicas."""
    return (
        ray.remote(RateLimiterActor)
        .options(name=RATE_LIMITER_NAME, namespace=namespace, lifetime="detached", get_if_exists=True, max_restarts=-1, num_cpus=0)
        .remote()
    )


class ActorRateLimiter:
    """A Gateway replica's way to the quota actor (`orchestration.ratelimit.RateLimiter`)."""

    def __init__(self, namespace: str = NAMESPACE):
        self._namespace = namespace
        self._handle = None  # looked up on the first rated request: no quota, no actor
        self._open_until = 0.0

    async def wait_s(self, key_id: str, limit: RateLimit) -> float:
        if time.monotonic() < self._open_until:
            return 0.0
        try:
            if self._handle is None:
                handle = await asyncio.to_thread(rate_limiter_handle, self._namespace)
                # A new actor first starts a worker process: that start is not the call being slow.
                await asyncio.wait_for(handle.__ray_ready__.remote(), START_TIMEOUT_S)
                self._handle = handle
            return await asyncio.wait_for(self._handle.take.remote(key_id, limit.rate, limit.burst), CALL_TIMEOUT_S)
        except Exception:
            logger.exception("the quota actor %s is unreachable: quotas are not enforced for %.0f s", RATE_LIMITER_NAME, OPEN_FOR_S)
            self._handle = None  # look it up again: a killed detached actor is created anew
            self._open_until = time.monotonic() + OPEN_FOR_S
            return 0.0
