"""The audit record's outcome is the status the client got, over the real routes with fake services."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.unit.orchestration.test_engine import PHOTO, FakeStages, NoMetrics, engine_for, face_at
from ufme_ray.config import UfmeSettings
from ufme_ray.serving.api.app import create_api
from ufme_ray.serving.api.dependencies import Services, get_services
from ufme_ray.serving.auth import Principal


class FakeKeys:
    def authenticate(self, key):
        return Principal(key_id="tester", role="admin")


class FakeAudit:
    def __init__(self):
        self.records = []

    async def record(self, record):
        self.records.append(record)


@pytest.fixture
def api(tmp_path):
    audit = FakeAudit()
    services = Services(
        settings=UfmeSettings(model_dir=tmp_path, data_dir=tmp_path),
        engine=engine_for(FakeStages([face_at(100, 100, 150)]), tmp_path=tmp_path),
        audit=audit, keys=FakeKeys(), demo=None, metrics=NoMetrics(),
    )
    app = create_api()
    app.dependency_overrides[get_services] = lambda: services
    return TestClient(app), audit


def test_the_outcome_is_the_status_sent(api):
    client, audit = api
    enrolled = client.post("/api/v1/subjects/alice/faces", files={"image": ("a.png", PHOTO, "image/png")})
    assert enrolled.status_code == 201, enrolled.text
    read = client.get("/api/v1/subjects/alice")
    assert read.status_code == 200, read.text
    assert [(r.operation, r.outcome) for r in audit.records] == [("enrol", "201"), ("read_subject", "200")]
