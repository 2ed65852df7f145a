"""Quotas per key over the real routes: past its rate a key gets 429 with Retry-After, audited and
counted; other keys and keys without a quota are untouched. The buckets are this process's
(`LocalRateLimiter`) on an injected clock; the cluster's actor is the integration test's."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from tests.unit.serving.conftest import ADMIN, AS_ADMIN, AS_SEARCHER, IMAGE, SEARCHER
from ufme_ray.audit import read_records
from ufme_ray.config import ApiKeySpec, AuthSettings
from ufme_ray.orchestration.ratelimit import LocalRateLimiter, RateLimit
from ufme_ray.serving.api.dependencies import get_services
from ufme_ray.serving.auth import KeyStore, key_digest

GATE = "ufme.gate-3.secret-gate"
AS_GATE = {"Authorization": f"Bearer {GATE}"}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


class Counted:
    def __init__(self) -> None:
        self.tags: list[dict] = []

    def inc(self, value=1.0, tags=None):
        self.tags.append(tags)


class Limiter(LocalRateLimiter):
    """The local buckets, remembering which keys asked."""

    def __init__(self, clock):
        super().__init__(clock)
        self.asked: list[str] = []

    async def wait_s(self, key_id: str, limit: RateLimit) -> float:
        self.asked.append(key_id)
        return await super().wait_s(key_id, limit)


@pytest.fixture
def rated(service):
    """The service with a search key `gate-3` limited to 1 request/s, burst 2."""
    client, store, services = service
    keys = [
        ApiKeySpec(id="ops", role="admin", sha256=key_digest(ADMIN)),
        ApiKeySpec(id="kiosk", role="search", sha256=key_digest(SEARCHER)),
        ApiKeySpec(id="gate-3", role="search", sha256=key_digest(GATE), rate=1.0, burst=2),
    ]
    clock = Clock()
    rated_services = dataclasses.replace(
        services, keys=KeyStore(AuthSettings(keys=keys)), limiter=Limiter(clock), metrics=SimpleNamespace(rate_limited=Counted())
    )
    client.app.dependency_overrides[get_services] = lambda: rated_services
    return client, store, rated_services, clock


def test_past_its_quota_a_key_gets_429_with_retry_after(rated):
    client, _, services, clock = rated
    assert [client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE).status_code for _ in range(2)] == [200, 200]
    refused = client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "gate-3" in refused.json()["error"]["message"]
    assert services.metrics.rate_limited.tags == [{"key_id": "gate-3"}]
    clock.now += 1.0  # one token back
    assert client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE).status_code == 200
    assert client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE).status_code == 429


def test_retry_after_rounds_the_wait_up(rated):
    client, _, _, clock = rated
    for _ in range(2):
        client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE)
    clock.now += 0.2
    assert client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE).headers["Retry-After"] == "1"


def test_a_429_is_audited_under_the_key(rated):
    client, store, services, _ = rated
    for _ in range(3):
        client.post("/api/v1/analyze", files=IMAGE, headers=AS_GATE)
    records, _ = read_records(store, limit=100)
    assert [(r.operation, r.outcome, r.detail, r.key_id) for r in records] == [
        ("analyze", "200", None, "gate-3"),
        ("analyze", "200", None, "gate-3"),
        ("analyze", "429", "rate_limited", "gate-3"),
    ]


def test_keys_without_a_quota_never_ask_the_limiter(rated):
    client, _, services, _ = rated
    for _ in range(5):
        assert client.post("/api/v1/analyze", files=IMAGE, headers=AS_SEARCHER).status_code == 200
        assert client.get("/api/v1/gallery", headers=AS_ADMIN).status_code == 200
    assert services.limiter.asked == []
    # A refused key (wrong role) is refused before its quota is asked about.
    assert client.get("/api/v1/gallery", headers=AS_GATE).status_code == 403
    assert services.limiter.asked == []
