"""Through the real service on the test cluster (started like `ufme-ray up`, no trusted proxy):
a local caller cannot name another client address with X-Forwarded-For, and a key with a quota
gets 429 with Retry-After past it, counted in the metrics (the quota actor of the cluster)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import RATED, RATED_QUOTA

pytestmark = pytest.mark.ray


def audit_record(service, operation: str, request_id: str, since: float) -> dict:
    """The answer record of one request, polled (the trail is read from storage)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = service.http.get("/api/v1/audit", params={"operation": operation, "since": since, "limit": 1000})
        assert page.status_code == 200, page.text
        found = [r for r in page.json()["records"] if r["request_id"] == request_id and r["phase"] == "answer"]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no audit record of request {request_id}")


def test_a_forwarded_for_header_from_an_untrusted_peer_is_not_the_client(service):
    since = time.time() - 1
    request_id = f"xff-{uuid.uuid4().hex}"
    answer = service.http.get("/api/v1/gallery", headers={"X-Forwarded-For": "6.6.6.6", "X-Request-ID": request_id})
    assert answer.status_code == 200, answer.text
    assert audit_record(service, "gallery_read", request_id, since)["client"] == "127.0.0.1"


def test_past_its_quota_a_key_gets_429_with_retry_after(service, faces_dir: Path):
    photo = faces_dir / "pad/live/silentface_image_T1.jpg"
    client = service.client_for(RATED)
    answers = [
        client.post("/api/v1/analyze", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
        for _ in range(RATED_QUOTA["burst"] + 1)
    ]
    assert [a.status_code for a in answers] == [200] * RATED_QUOTA["burst"] + [429], [a.text for a in answers]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 1 / RATED_QUOTA["rate"]
    # Other keys are not held back by it.
    assert service.client_for("search").post(
        "/api/v1/analyze", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")}
    ).status_code == 200
    series = "ray_ufme_rate_limited_total{"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10).text
        counted = [line for line in text.splitlines() if line.startswith(series) and f'key_id="{RATED}"' in line]
        if counted:
            break
        time.sleep(1)
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1
