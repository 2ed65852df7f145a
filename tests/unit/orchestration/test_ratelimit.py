"""The token bucket behind the keys' quotas, on an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from ufme_ray.orchestration.ratelimit import LocalRateLimiter, RateLimit, TokenBuckets, retry_after_s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_full_bucket_lets_a_burst_through_then_refuses(clock):
    buckets = TokenBuckets(clock)
    limit = RateLimit(rate=2.0, burst=3)
    assert [buckets.take("gate-3", limit) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("gate-3", limit) == pytest.approx(0.5)  # one token at 2/s


def test_tokens_come_back_at_the_rate_and_no_more_than_the_burst(clock):
    buckets = TokenBuckets(clock)
    limit = RateLimit(rate=2.0, burst=3)
    for _ in range(3):
        buckets.take("gate-3", limit)
    clock.now += 0.25
    assert buckets.take("gate-3", limit) == pytest.approx(0.25)  # half a token there, half to come
    clock.now += 0.25
    assert buckets.take("gate-3", limit) == 0.0
    clock.now += 3600  # a long idle refills to the burst, not beyond
    assert [buckets.take("gate-3", limit) for _ in range(4)].count(0.0) == 3


def test_over_a_long_run_the_rate_holds(clock):
    buckets = TokenBuckets(clock)
    limit = RateLimit(rate=2.0, burst=10)
    passed = 0
    for _ in range(800):  # a request every 1/8 s (exact in binary) from t=0 to t=99.875
        passed += buckets.take("k", limit) == 0.0
        clock.now += 0.125
    assert passed == 10 + 199  # the burst, then every whole token 99.875 s at 2/s gave


def test_refused_requests_take_nothing(clock):
    buckets = TokenBuckets(clock)
    limit = RateLimit(rate=1.0, burst=1)
    assert buckets.take("k", limit) == 0.0
    for _ in range(100):
        assert buckets.take("k", limit) > 0
    clock.now += 1.0
    assert buckets.take("k", limit) == 0.0


def test_keys_have_their_own_buckets(clock):
    buckets = TokenBuckets(clock)
    limit = RateLimit(rate=1.0, burst=1)
    assert buckets.take("a", limit) == 0.0
    assert buckets.take("a", limit) > 0
    assert buckets.take("b", limit) == 0.0


def test_a_lowered_burst_applies_at_once(clock):
    buckets = TokenBuckets(clock)
    assert buckets.take("k", RateLimit(rate=1.0, burst=10)) == 0.0  # 9 left
    assert [buckets.take("k", RateLimit(rate=1.0, burst=2)) for _ in range(3)] == [0.0, 0.0, pytest.approx(1.0)]


def test_burst_defaults_to_the_rate_rounded_up():
    assert RateLimit.of(None, None) is None
    assert RateLimit.of(20.0, None) == RateLimit(20.0, 20)
    assert RateLimit.of(2.5, None) == RateLimit(2.5, 3)
    assert RateLimit.of(0.1, None) == RateLimit(0.1, 1)
    assert RateLimit.of(20.0, 40) == RateLimit(20.0, 40)


def test_retry_after_is_whole_seconds_rounded_up():
    assert [retry_after_s(w) for w in (0.001, 0.5, 1.0, 1.01, 9.99)] == [1, 1, 1, 2, 10]


def test_the_local_limiter_is_the_buckets(clock):
    limiter = LocalRateLimiter(clock)
    limit = RateLimit(rate=1.0, burst=1)
    assert asyncio.run(limiter.wait_s("k", limit)) == 0.0
    assert asyncio.run(limiter.wait_s("k", limit)) == pytest.approx(1.0)
