"""GET /api/v1/imports[/{id}]: imports' states for admin and the gallery's enrol keys only."""

from __future__ import annotations

import pytest

from tests.unit.serving.conftest import ADMIN, key
from ufme_ray.orchestration.imports import ImportState, write_state

CLERK, OTHER = "ufme.clerk.secret", "ufme.other.secret"


@pytest.fixture
def client(service, served_with):
    _, store, _ = service
    write_state(store, ImportState(import_id="imp-1", gallery_id="badges", source="/data", capture="stored", total=10,
                                   counts={"enrolled": 7, "no_face": 1}, started_at=100.0))
    for import_id, started_at in (("imp-2", 300.0), ("imp-3", 200.0)):
        write_state(store, ImportState(import_id=import_id, gallery_id="visitors", source="/v", capture="stored",
                                       started_at=started_at))
    store.write("imports/imp-1/report.parquet", b"not listed: only states are")
    return served_with(
        key("ops", "admin", ADMIN), key("clerk", "enrol", CLERK, galleries=["badges"]),
        key("other", "enrol", OTHER, galleries=["visitors"]), store=store,
    )


def test_the_state_goes_to_admin_and_the_gallerys_enrol_keys(client):
    for key in (ADMIN, CLERK):
        answer = client.get("/api/v1/imports/imp-1", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.json()["done"] == 8 and answer.json()["state"] == "running"
    assert client.get("/api/v1/imports/imp-1", headers={"Authorization": f"Bearer {OTHER}"}).status_code == 403
    missing = client.get("/api/v1/imports/imp-9", headers={"Authorization": f"Bearer {ADMIN}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_import"
    assert client.get("/api/v1/imports/..%2Fx", headers={"Authorization": f"Bearer {ADMIN}"}).status_code in (404, 422)


def test_the_list_is_newest_first_paged_and_only_the_keys_galleries(client):
    def listed(key: str, **query) -> dict:
        answer = client.get("/api/v1/imports", params=query, headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    everything = listed(ADMIN)
    assert [i["import_id"] for i in everything["imports"]] == ["imp-2", "imp-3", "imp-1"] and everything["total"] == 3
    assert everything["imports"][2]["counts"] == {"enrolled": 7, "no_face": 1} and everything["imports"][2]["done"] == 8
    second = listed(ADMIN, offset=1, limit=1)
    assert [i["import_id"] for i in second["imports"]] == ["imp-3"] and (second["total"], second["offset"], second["limit"]) == (3, 1, 1)
    assert [i["import_id"] for i in listed(CLERK)["imports"]] == ["imp-1"]
    assert [i["import_id"] for i in listed(OTHER)["imports"]] == ["imp-2", "imp-3"]
    refused = client.get("/api/v1/imports", params={"limit": 0}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"
