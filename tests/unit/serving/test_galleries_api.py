"""Galleries over the real routes and keys, with fake vision stages and an in-memory gallery that
holds subjects by key as the shards do (every photo here is the same face)."""

from __future__ import annotations

import pytest

from tests.unit.serving.conftest import ADMIN, ENROLLER, IMAGE, SEARCHER, key
from ufme_ray.audit import read_records

GATE, CLERK = "ufme.gate-3.secret-search-staff", "ufme.clerk.secret-enrol-staff"


def as_key(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def api(service, served_with):
    _, store, services = service
    client = served_with(
        key("ops", "admin", ADMIN), key("desk", "enrol", ENROLLER), key("kiosk", "search", SEARCHER),
        key("gate-3", "search", GATE, galleries=["staff"]), key("clerk", "enrol", CLERK, galleries=["staff"]),
    )
    return client, store, services


def admin(client, method: str, path: str, **kwargs):
    return client.request(method, path, headers=as_key(ADMIN), **kwargs)


def enrol(client, path: str, key: str = ADMIN):
    return client.post(path, files=IMAGE, headers=as_key(key))


def test_a_gallery_is_created_shown_listed_and_deleted(api):
    client, _, _ = api
    created = admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "staff", "description": "HQ staff"})
    assert created.status_code == 201, created.text
    assert created.json()["subjects"] == 0 and created.json()["description"] == "HQ staff"
    again = admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "staff"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "gallery_exists"
    assert enrol(client, "/api/v1/galleries/staff/subjects/ann/faces").status_code == 201
    shown = admin(client, "GET", "/api/v1/galleries/staff").json()
    assert (shown["subjects"], shown["templates"]) == (1, 1)
    assert shown["gates"]["enrol"] == ["quality", "liveness", "morph"] and shown["thresholds"]["similarity_min"] == 0.45
    listed = admin(client, "GET", "/api/v1/galleries", params={"limit": 1, "offset": 1}).json()
    assert listed["total"] == 2 and [g["gallery_id"] for g in listed["galleries"]] == ["staff"]
    deleted = admin(client, "DELETE", "/api/v1/galleries/staff")
    assert deleted.status_code == 200 and deleted.json() == {"gallery_id": "staff", "templates_erased": 1}
    for answer in (
        admin(client, "GET", "/api/v1/galleries/staff"),
        enrol(client, "/api/v1/galleries/staff/subjects/ann/faces"),
        admin(client, "GET", "/api/v1/galleries/staff/subjects/ann"),
        client.post("/api/v1/galleries/staff/identify", files=IMAGE, headers=as_key(ADMIN)),
        admin(client, "DELETE", "/api/v1/galleries/staff"),
    ):
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_gallery", answer.text


def test_the_same_subject_id_in_two_galleries_is_two_subjects(api):
    client, _, _ = api
    for gallery in ("staff", "visitors"):
        assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": gallery}).status_code == 201
        assert enrol(client, f"/api/v1/galleries/{gallery}/subjects/ann/faces").status_code == 201
    found = client.post("/api/v1/galleries/staff/identify", files=IMAGE, headers=as_key(SEARCHER)).json()
    assert found["galleries"] == ["staff"]
    assert [(c["gallery_id"], c["subject_id"]) for c in found["faces"][0]["candidates"]] == [("staff", "ann")]
    both = client.post("/api/v1/identify", files=IMAGE, data={"galleries": "staff,visitors"}, headers=as_key(SEARCHER)).json()
    assert sorted((c["gallery_id"], c["subject_id"]) for c in both["faces"][0]["candidates"]) == [
        ("staff", "ann"), ("visitors", "ann")
    ]
    assert both["faces"][0]["decision"]["gallery_id"] in ("staff", "visitors")
    assert admin(client, "DELETE", "/api/v1/galleries/visitors/subjects/ann").status_code == 200
    assert admin(client, "GET", "/api/v1/galleries/staff/subjects/ann").json()["gallery_id"] == "staff"
    # The routes without a gallery act on `default`, which holds no ann.
    assert admin(client, "GET", "/api/v1/subjects/ann").status_code == 404
    page = admin(client, "GET", "/api/v1/galleries/staff/subjects").json()
    assert page == {"gallery_id": "staff", "subject_ids": ["ann"], "total": 1, "offset": 0, "limit": 100}


def test_a_scoped_key_may_use_only_its_galleries(api):
    client, _, _ = api
    for gallery in ("staff", "visitors"):
        assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": gallery}).status_code == 201
    assert enrol(client, "/api/v1/galleries/staff/subjects/ann/faces", CLERK).status_code == 201
    refused = [
        enrol(client, "/api/v1/galleries/visitors/subjects/ann/faces", CLERK),
        enrol(client, "/api/v1/subjects/ann/faces", CLERK),  # default is a gallery like any other
        client.post("/api/v1/galleries/visitors/identify", files=IMAGE, headers=as_key(GATE)),
        client.post("/api/v1/identify", files=IMAGE, data={"galleries": "staff,visitors"}, headers=as_key(GATE)),
        client.post("/api/v1/identify", files=IMAGE, headers=as_key(GATE)),
    ]
    assert [r.status_code for r in refused] == [403] * 5
    assert all(r.json()["error"]["code"] == "forbidden" for r in refused)
    assert client.post("/api/v1/galleries/staff/identify", files=IMAGE, headers=as_key(GATE)).status_code == 200


def test_a_duplicate_names_the_other_subject_only_to_keys_that_may_search(api):
    client, _, _ = api
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "staff"}).status_code == 201
    assert enrol(client, "/api/v1/galleries/staff/subjects/ann/faces").status_code == 201
    blind = enrol(client, "/api/v1/galleries/staff/subjects/bob/faces", CLERK)
    assert blind.status_code == 409, blind.text
    assert "ann" not in blind.text and "subject_id" not in blind.json()["error"].get("details", {})
    named = enrol(client, "/api/v1/galleries/staff/subjects/bob/faces", ADMIN)
    assert named.status_code == 409 and named.json()["error"]["details"]["subject_id"] == "ann"
    # Within its gallery only: the same face under bob in another gallery is no duplicate.
    assert enrol(client, "/api/v1/subjects/bob/faces").status_code == 201


def test_a_gallery_policy_applies_live_and_the_strictest_over_several(api):
    client, _, _ = api
    policy = {"thresholds": {"similarity_min": 0.8}, "gates": {"identify": ["liveness", "morph", "quality"]}}
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "watch", "policy": policy}).status_code == 201
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "staff"}).status_code == 201
    alone = client.post("/api/v1/galleries/staff/identify", files=IMAGE, headers=as_key(SEARCHER)).json()
    assert alone["thresholds"]["similarity_min"] == 0.45
    both = client.post("/api/v1/identify", files=IMAGE, data={"galleries": "staff,watch"}, headers=as_key(SEARCHER)).json()
    assert both["thresholds"]["similarity_min"] == 0.8
    assert both["faces"][0]["face"]["gates"]["quality"]["enforced"] is True
    changed = admin(client, "PATCH", "/api/v1/galleries/staff", json={"policy": {"thresholds": {"similarity_min": 0.5}}})
    assert changed.status_code == 200 and changed.json()["thresholds"]["similarity_min"] == 0.5
    after = client.post("/api/v1/galleries/staff/identify", files=IMAGE, headers=as_key(SEARCHER)).json()
    assert after["thresholds"]["similarity_min"] == 0.5
    bad = admin(client, "PATCH", "/api/v1/galleries/staff", json={"policy": {"thresholds": {"similarity_min": 7}}})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_policy"
    typo = admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "x", "policy": {"threshold": {}}})
    assert typo.status_code == 422 and typo.json()["error"]["code"] == "invalid_policy"


def test_bad_gallery_requests_are_refused_with_reasons(api, monkeypatch):
    client, _, services = api
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "no/slash"}).status_code == 422
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "ok", "extra": 1}).status_code == 422
    assert admin(client, "DELETE", "/api/v1/galleries/default").json()["error"]["code"] == "default_gallery"
    conflicting = client.post(
        "/api/v1/galleries/staff/identify", files=IMAGE, data={"galleries": "default"}, headers=as_key(SEARCHER)
    )
    assert conflicting.status_code == 422
    monkeypatch.setattr(services.engine.gallery, "max_galleries", 2)
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "one"}).status_code == 201
    full = admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "two"})
    assert full.status_code == 409 and full.json()["error"]["code"] == "too_many_galleries"


def test_audit_records_carry_the_galleries(api):
    client, store, _ = api
    assert admin(client, "POST", "/api/v1/galleries", json={"gallery_id": "staff"}).status_code == 201
    assert enrol(client, "/api/v1/galleries/staff/subjects/ann/faces").status_code == 201
    assert client.post("/api/v1/galleries/visitors/identify", files=IMAGE, headers=as_key(GATE)).status_code == 403
    records, _ = read_records(store, limit=100)
    assert [(r.operation, r.outcome, r.galleries) for r in records if r.phase == "answer"] == [
        ("gallery_create", "201", ["staff"]),
        ("enrol", "201", ["staff"]),
        ("identify", "403", ["visitors"]),
    ]
    page = admin(client, "GET", "/api/v1/audit", params={"gallery_id": "staff"}).json()
    assert [(r["operation"], r["phase"]) for r in page["records"]] == [
        ("gallery_create", "intent"), ("gallery_create", "answer"), ("enrol", "intent"), ("enrol", "answer")
    ]
