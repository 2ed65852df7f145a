"""GET /api/v1/keys/me (any key: who it is), GET /api/v1/compaction (admin: the last run) and GET
/api/v1/stages (admin: the execution providers each stage's sessions got)."""

from __future__ import annotations

import dataclasses

from tests.unit.orchestration.test_engine import SESSIONS
from tests.unit.serving.conftest import ADMIN, AS_ADMIN, AS_ENROLLER, AS_SEARCHER, key
from ufme_ray.audit import read_records
from ufme_ray.jobs.compact import Summary
from ufme_ray.orchestration.compactions import LastCompaction, read_last_compaction, write_last_compaction

GATE = "ufme.gate.secret-gate"


def test_every_role_reads_who_its_key_is(service):
    client, _, _ = service
    me = client.get("/api/v1/keys/me", headers=AS_ADMIN).json()
    assert me == {"key_id": "ops", "role": "admin", "grants": ["admin", "enrol", "search"], "galleries": "*",
                  "captures": "*", "rate": None, "burst": None}
    assert client.get("/api/v1/keys/me", headers=AS_ENROLLER).json()["grants"] == ["enrol"]
    assert client.get("/api/v1/keys/me", headers=AS_SEARCHER).json()["grants"] == ["search"]
    refused = client.get("/api/v1/keys/me", headers={"Authorization": "Bearer ufme.x.nope"})
    assert refused.status_code == 401 and refused.json()["error"]["message"] == "the API key is not valid"


def test_a_scoped_key_is_told_its_galleries_captures_and_quota(served_with):
    client = served_with(key("gate", "search", GATE, galleries=["staff", "lobby"], captures=["live"], rate=2.0))
    me = client.get("/api/v1/keys/me", headers={"X-API-Key": GATE}).json()
    assert (me["galleries"], me["captures"], me["rate"], me["burst"]) == (["lobby", "staff"], ["live"], 2.0, 2)


def test_reading_the_key_is_audited_without_the_key(service):
    client, store, _ = service
    client.get("/api/v1/keys/me", headers=AS_SEARCHER)
    records = [r for r in read_records(store, limit=100)[0] if r.operation == "key_read"]
    assert [(r.key_id, r.outcome) for r in records] == [("kiosk", "200")]
    assert not any("secret" in r.model_dump_json() for r in records)


def job_summary() -> dict:
    """What the compaction job's summary holds after a run (jobs.compact.Summary)."""
    summary = Summary(status="compacted", storage_uri="file:///s", namespace="ufme", epoch=3, previous_epoch=2,
                      duration_s=4.5, vectors_in=10, vectors_out=8, vectors_dropped=2, swapped=[0, 1],
                      shards=[{"shard": 0, "watermark": 7, "vectors_in": 10, "vectors_out": 8, "kind": "exact"}],
                      retention={"anchor": 2, "epochs_deleted": [1], "objects_deleted": 5, "segments_deleted": 2,
                                 "truncated_through": {0: 7}})
    return dataclasses.asdict(summary)


def test_the_last_compaction_is_none_then_the_jobs_summary(service, served_with):
    _, store, _ = service
    client = served_with(key("ops", "admin", ADMIN), store=store)
    assert client.get("/api/v1/compaction", headers=AS_ADMIN).json() == {"last": None}
    assert read_last_compaction(store) is None
    write_last_compaction(store, LastCompaction.model_validate({**job_summary(), "finished_at": 1000.0}))
    last = client.get("/api/v1/compaction", headers=AS_ADMIN).json()["last"]
    assert (last["status"], last["epoch"], last["previous_epoch"], last["finished_at"]) == ("compacted", 3, 2, 1000.0)
    assert (last["vectors_in"], last["vectors_out"], last["vectors_dropped"], last["swapped"]) == (10, 8, 2, [0, 1])
    assert last["retention"] == {"epochs_deleted": [1], "objects_deleted": 5, "segments_deleted": 2}
    assert "storage_uri" not in last  # where it ran is the operator's, not the API's


def test_the_last_compaction_is_for_admin_keys_only(service):
    client, _, _ = service
    answer = client.get("/api/v1/compaction", headers=AS_ENROLLER)
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"


def test_without_storage_the_operations_routes_say_so(served_with):
    client = served_with(key("ops", "admin", ADMIN), store=None)
    for path in ("/api/v1/compaction", "/api/v1/imports"):
        answer = client.get(path, headers=AS_ADMIN)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "not_ready"


def test_an_admin_reads_the_providers_each_stage_session_got(service):
    client, store, _ = service
    assert client.get("/api/v1/stages", headers=AS_ADMIN).json() == {"stages": SESSIONS}
    refused = client.get("/api/v1/stages", headers=AS_SEARCHER)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    records = [r for r in read_records(store, limit=100)[0] if r.operation == "stages_read"]
    assert [(r.key_id, r.outcome) for r in records] == [("ops", "200"), ("kiosk", "403")]
