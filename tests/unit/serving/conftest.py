"""The gateway's real routes, keys and audit trail (on a file store) over fake vision stages and gallery."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from fastapi.testclient import TestClient

from tests.unit.orchestration.test_engine import PHOTO, FakeStages, NoMetrics, engine_for, face_at
from ufme_ray.audit import SubjectPseudonyms
from ufme_ray.config import ApiKeySpec, AuthSettings, UfmeSettings
from ufme_ray.gallery.storage import open_storage
from ufme_ray.orchestration.audit_trail import AuditTrail
from ufme_ray.orchestration.ratelimit import LocalRateLimiter
from ufme_ray.orchestration.refusals import RefusalAggregator
from ufme_ray.serving.api.app import create_api
from ufme_ray.serving.api.dependencies import Services, get_services
from ufme_ray.serving.auth import KeyStore, key_digest

ADMIN, ENROLLER, SEARCHER = "ufme.ops.secret-admin", "ufme.desk.secret-enrol", "ufme.kiosk.secret-search"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_ENROLLER = {"Authorization": f"Bearer {ENROLLER}"}
AS_SEARCHER = {"Authorization": f"Bearer {SEARCHER}"}
IMAGE = {"image": ("a.png", PHOTO, "image/png")}


async def no_shards():
    return []


@pytest.fixture
def service(tmp_path):
    store = open_storage((tmp_path / "store").as_uri())
    engine = engine_for(FakeStages([face_at(100, 100, 150)]), tmp_path=tmp_path)
    audit = AuditTrail(store, SubjectPseudonyms(None), no_shards, RefusalAggregator(window_s=3600, max_kinds=3))
    keys = key_store(key("ops", "admin", ADMIN), key("desk", "enrol", ENROLLER), key("kiosk", "search", SEARCHER))
    services = Services(
        settings=UfmeSettings(model_dir=tmp_path, data_dir=tmp_path), engine=engine, audit=audit, keys=keys, demo=None,
        metrics=NoMetrics(), limiter=LocalRateLimiter(),
    )
    with served(services) as client:
        yield client, store, services


def key(key_id: str, role: str, secret: str, **fields) -> ApiKeySpec:
    return ApiKeySpec(id=key_id, role=role, sha256=key_digest(secret), **fields)


def key_store(*specs: ApiKeySpec) -> KeyStore:
    return KeyStore(AuthSettings(keys=list(specs)))


def served(services: Services) -> TestClient:
    """A client of the real routes over `services`."""
    app = create_api()
    app.dependency_overrides[get_services] = lambda: services
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def served_with(service):
    """`served_with(*keys, **fields)`: a client of the `service` fixture's services with these keys
    (and other fields replaced), over the same engine and audit trail."""
    _, _, services = service
    with contextlib.ExitStack() as opened:
        yield lambda *specs, **fields: opened.enter_context(
            served(dataclasses.replace(services, keys=key_store(*specs), **fields))
        )
