"""Every request to an operation leaves a durable audit record with the status the client got:
over the real routes, real keys and a real AuditTrail on a file store, with fake vision stages."""

from __future__ import annotations

from tests.unit.serving.conftest import AS_ADMIN, AS_SEARCHER, IMAGE
from ufme_ray.audit import read_records


def trail(store):
    records, _ = read_records(store, limit=10_000)
    return [(r.operation, r.outcome, r.detail, r.key_id, r.phase) for r in records]


def test_a_change_is_recorded_before_it_runs_and_when_it_answers(service):
    client, store, _ = service
    assert client.post("/api/v1/subjects/alice/faces", files=IMAGE, headers=AS_ADMIN).status_code == 201
    assert client.get("/api/v1/subjects/alice", headers=AS_ADMIN).status_code == 200
    assert trail(store) == [
        ("enrol", "pending", None, "ops", "intent"),
        ("enrol", "201", None, "ops", "answer"),
        ("read_subject", "200", None, "ops", "answer"),
    ]


def test_refusals_before_the_operation_ran_are_recorded(service):
    client, store, _ = service
    assert client.post("/api/v1/identify", files=IMAGE).status_code == 401
    assert client.get("/api/v1/gallery", headers=AS_SEARCHER).status_code == 403
    assert client.get("/api/v1/audit?limit=0", headers=AS_ADMIN).status_code == 422
    assert trail(store) == [
        ("identify", "401", "unauthenticated", "anonymous", "answer"),
        ("gallery_read", "403", "forbidden", "kiosk", "answer"),
        ("audit_read", "422", "invalid_request", "ops", "answer"),
    ]


def test_reads_and_refusals_by_the_domain_are_recorded(service):
    client, store, _ = service
    assert client.post("/api/v1/analyze", files=IMAGE, headers=AS_SEARCHER).status_code == 200
    assert client.get("/api/v1/gallery", headers=AS_ADMIN).status_code == 200
    assert client.get("/api/v1/subjects/nobody", headers=AS_ADMIN).status_code == 404
    assert client.get("/api/v1/audit", headers=AS_ADMIN).status_code == 200
    assert trail(store) == [
        ("analyze", "200", None, "kiosk", "answer"),
        ("gallery_read", "200", None, "ops", "answer"),
        ("read_subject", "404", "unknown_subject", "ops", "answer"),
        ("audit_read", "200", None, "ops", "answer"),
    ]


def test_an_unexpected_error_is_recorded_as_the_500_sent(service, monkeypatch):
    client, store, services = service

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(services.engine, "identify", broken)
    answer = client.post("/api/v1/identify", files=IMAGE, headers=AS_SEARCHER)
    assert answer.status_code == 500
    assert trail(store) == [("identify", "500", "internal_error", "kiosk", "answer")]


def test_a_flood_of_refusals_is_aggregated_and_bounded(service):
    client, store, services = service
    for _ in range(40):
        assert client.post("/api/v1/identify", files=IMAGE).status_code == 401
    for key in ("ufme.a.x", "ufme.b.x", "ufme.c.x"):
        assert client.get("/api/v1/gallery", headers={"X-API-Key": key}).status_code == 401
    assert client.get("/api/v1/gallery", headers=AS_SEARCHER).status_code == 403
    # A fourth kind of refusal, beyond max_kinds=3: kept only as '*' for its operation, status and code.
    for _ in range(2):
        assert client.post("/api/v1/analyze", files=IMAGE).status_code == 401
    assert trail(store) == [
        ("identify", "401", "unauthenticated", "anonymous", "answer"),
        ("gallery_read", "401", "unauthenticated", "unknown-key", "answer"),
        ("gallery_read", "403", "forbidden", "kiosk", "answer"),
        ("analyze", "401", "unauthenticated", "*", "answer"),
    ]
    client.portal.call(services.audit.flush)  # the windows end (as when the replica stops)
    records, total = read_records(store, limit=100)
    assert total == 7
    counted = {(r.operation, r.key_id): r.count for r in records if r.first_time is not None}
    assert counted == {("identify", "anonymous"): 39, ("gallery_read", "unknown-key"): 2, ("analyze", "*"): 1}
    assert all(r.first_time <= r.time for r in records if r.first_time is not None)
    assert sum(r.count for r in records) == 40 + 3 + 1 + 2


def test_a_record_that_cannot_be_written_fails_the_request(service, monkeypatch):
    client, store, services = service

    async def down(record):
        raise OSError("store unreachable")

    monkeypatch.setattr(services.audit._writer, "record", down)
    answer = client.post("/api/v1/subjects/alice/faces", files=IMAGE, headers=AS_ADMIN)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "audit_unavailable"
    # The intent could not be written, so the change never ran.
    monkeypatch.undo()
    assert client.get("/api/v1/subjects/alice", headers=AS_ADMIN).status_code == 404
