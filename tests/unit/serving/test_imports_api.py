"""GET /api/v1/imports/{id}: an import's state for admin and the gallery's enrol keys only."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.testclient import TestClient

from tests.unit.serving.conftest import ADMIN
from ufme_ray.config import ApiKeySpec, AuthSettings
from ufme_ray.orchestration.imports import ImportState, write_state
from ufme_ray.serving.api.app import create_api
from ufme_ray.serving.api.dependencies import get_services
from ufme_ray.serving.auth import KeyStore, key_digest

CLERK, OTHER = "ufme.clerk.secret", "ufme.other.secret"


@pytest.fixture
def client(service):
    _, store, services = service
    keys = KeyStore(AuthSettings(keys=[
        ApiKeySpec(id="ops", role="admin", sha256=key_digest(ADMIN)),
        ApiKeySpec(id="clerk", role="enrol", sha256=key_digest(CLERK), galleries=["badges"]),
        ApiKeySpec(id="other", role="enrol", sha256=key_digest(OTHER), galleries=["visitors"]),
    ]))
    write_state(store, ImportState(import_id="imp-1", gallery_id="badges", source="/data", capture="stored", total=10,
                                   counts={"enrolled": 7, "no_face": 1}))
    app = create_api()
    app.dependency_overrides[get_services] = lambda: dataclasses.replace(services, keys=keys, store=store)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_state_goes_to_admin_and_the_gallerys_enrol_keys(client):
    for key in (ADMIN, CLERK):
        answer = client.get("/api/v1/imports/imp-1", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.json()["done"] == 8 and answer.json()["state"] == "running"
    assert client.get("/api/v1/imports/imp-1", headers={"Authorization": f"Bearer {OTHER}"}).status_code == 403
    missing = client.get("/api/v1/imports/imp-2", headers={"Authorization": f"Bearer {ADMIN}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_import"
    assert client.get("/api/v1/imports/..%2Fx", headers={"Authorization": f"Bearer {ADMIN}"}).status_code in (404, 422)
