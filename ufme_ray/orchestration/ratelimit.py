"""Quotas per API key: a token bucket per key id (`rate` tokens a second, at most `burst` held).

A request takes one token; with none left it is refused and told how long until one is there.
A bucket starts full, so an idle key may send `burst` requests at once. The buckets here are one
process's: the Gateway replicas share one set held by a named actor
(`ufme_ray.serving.rate_limiter`), so a key's quota holds across replicas, not per replica.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RateLimit:
    rate: float  # tokens (requests) per second
    burst: int  # the most tokens a bucket holds

    @classmethod
    def of(cls, rate: float | None, burst: int | None) -> "RateLimit | None":
        """A key's quota from its settings; None without a rate. Burst defaults to the rate rounded up."""
        if rate is None:
            return None
        return cls(rate, burst if burst is not None else max(1, math.ceil(rate)))


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One bucket per key id; `clock` is monotonic seconds (injected by tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key_id: str, limit: RateLimit) -> float:
        """Take a token: 0.0 if there was one (the request passes), else the seconds until there is."""
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(limit.burst), now)
        # Capped at the burst in force, so a quota lowered while the key was idle applies at once.
        bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.at) * limit.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / limit.rate


class RateLimiter(Protocol):
    async def wait_s(self, key_id: str, limit: RateLimit) -> float:
        """Take a token for `key_id`: 0.0 to pass, else the seconds until the next token."""


class LocalRateLimiter:
    """Buckets in this process: for one replica alone (tests, a single process), not across replicas."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._buckets = TokenBuckets(clock)

    async def wait_s(self, key_id: str, limit: RateLimit) -> float:
        return self._buckets.take(key_id, limit)


def retry_after_s(wait_s: float) -> int:
    """Retry-After is whole seconds: rounded up, so a client that waits it finds a token."""
    return max(1, math.ceil(wait_s))
