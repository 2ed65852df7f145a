"""GET /api/v1/imports/{id}: an import's state for admin and the gallery's enrol keys only."""

from __future__ import annotations

import pytest

from tests.unit.serving.conftest import ADMIN, key
from ufme_ray.orchestration.imports import ImportState, write_state

CLERK, OTHER = "ufme.clerk.secret", "ufme.other.secret"


@pytest.fixture
def client(service, served_with):
    _, store, _ = service
    write_state(store, ImportState(import_id="imp-1", gallery_id="badges", source="/data", capture="stored", total=10,
                                   counts={"enrolled": 7, "no_face": 1}))
    return served_with(
        key("ops", "admin", ADMIN), key("clerk", "enrol", CLERK, galleries=["badges"]),
        key("other", "enrol", OTHER, galleries=["visitors"]), store=store,
    )


def test_the_state_goes_to_admin_and_the_gallerys_enrol_keys(client):
    for key in (ADMIN, CLERK):
        answer = client.get("/api/v1/imports/imp-1", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.json()["done"] == 8 and answer.json()["state"] == "running"
    assert client.get("/api/v1/imports/imp-1", headers={"Authorization": f"Bearer {OTHER}"}).status_code == 403
    missing = client.get("/api/v1/imports/imp-2", headers={"Authorization": f"Bearer {ADMIN}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_import"
    assert client.get("/api/v1/imports/..%2Fx", headers={"Authorization": f"Bearer {ADMIN}"}).status_code in (404, 422)
