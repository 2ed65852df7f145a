"""The bad-input proof fails for each thing it must catch, and counts Schemathesis requests exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from proving.bad_input import BadInputReport, Outcome, format_tables
from proving.gallery_state import GalleryFingerprint, KnownSubjects
from proving.openapi_fuzz import FuzzSummary, count_events, route_template

GALLERY = GalleryFingerprint(((0, 5, 9), (1, 4, 7)), (("bi-known-id01", ((11, 0.6, 1.0),)),))


def outcome(status: int | None, *, error: str | None = None, may_succeed: bool = False, kind: str = "truncated_jpeg") -> Outcome:
    return Outcome(kind, "POST /api/v1/identify", f"{kind} case", status, error, 12.0, may_succeed)


def report(outcomes: list[Outcome], *, after: GalleryFingerprint = GALLERY, ready: int = 200) -> BadInputReport:
    return BadInputReport("http://svc", 1, 4, 60.0, KnownSubjects(["bi-known-id01"], []), outcomes, FuzzSummary(),
                          GALLERY, after, ready, 1.0, 1.0)


def test_a_clean_run_passes_and_prints_its_tables():
    clean = report([outcome(400), outcome(413, kind="bomb_header"), outcome(200, may_succeed=True, kind="odd_encoding")])
    assert clean.problems() == []
    tables = format_tables(clean)
    assert "| bomb_header |" in tables and "| 5xx | 0 |" in tables and "unchanged" in tables


@pytest.mark.parametrize(
    "bad, expected",
    [
        (outcome(500), "1 5xx answers"),
        (outcome(None, error="timeout"), "1 hung requests"),
        (outcome(None, error="ConnectError: refused"), "1 requests without an answer"),
        (outcome(400, error="malformed error body: 'oops'"), "1 errors without the JSON error body"),
        (outcome(201), "1 hostile inputs accepted"),
    ],
)
def test_each_failure_is_reported(bad, expected):
    problems = report([outcome(400), bad]).problems()
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_an_unready_service_or_a_changed_gallery_fails():
    assert report([outcome(400)], ready=503).problems() == ["GET /ready answered 503 after the run"]
    # A refused delete that still logged an event: same templates, one more applied event on shard 1.
    logged = GalleryFingerprint(((0, 5, 9), (1, 4, 8)), GALLERY.subjects)
    assert report([outcome(404)], after=logged).problems() == [
        "gallery changed: shard 1: live templates 4 -> 4, applied_seq 7 -> 8"
    ]
    touched = GalleryFingerprint(GALLERY.shards, (("bi-known-id01", ()),))
    assert "subject bi-known-id01" in report([outcome(404)], after=touched).problems()[0]


def interaction(method: str, path: str, status: int | None) -> dict:
    response = None if status is None else {
        "status_code": status, "elapsed": 0.25, "content": {"$base64": base64.b64encode(b'{"error": {}}').decode()}
    }
    return {"request": {"method": method, "uri": f"http://svc{path}"}, "response": response}


def test_schemathesis_requests_are_counted_from_its_ndjson(tmp_path: Path):
    events = [
        {"Initialize": {}},
        {"ScenarioFinished": {"recorder": {"label": "GET /api/v1/subjects/{subject_id}", "interactions": {
            "a": interaction("GET", "/api/v1/subjects/x%2Fy", 404),
            "b": interaction("GET", "/api/v1/subjects/zz", 422),
        }}}},
        {"ScenarioFinished": {"recorder": {"label": "POST /api/v1/identify"}}},  # skipped: no interactions
        {"ScenarioFinished": {"recorder": {"label": "Stateful tests", "interactions": {
            "c": interaction("POST", "/api/v1/subjects/q/faces", 500),
            "d": interaction("PUT", "/ready", None),
        }}}},
    ]
    ndjson = tmp_path / "events.ndjson"
    ndjson.write_text("".join(json.dumps(e) + "\n" for e in events))
    summary = FuzzSummary()
    count_events(ndjson, summary)
    assert summary.requests == 4 and summary.no_response == 1
    assert summary.by_operation["GET /api/v1/subjects/{subject_id}"] == {"404": 1, "422": 1}
    assert [e["status"] for e in summary.server_errors] == [500]
    assert summary.server_errors[0]["response"] == '{"error": {}}' and summary.max_latency_ms == 250.0


def test_route_templates():
    assert route_template("/api/v1/subjects/a/b/faces") == "/api/v1/subjects/{subject_id}/faces"
    assert route_template("/api/v1/subjects/") == "/api/v1/subjects/"
    assert route_template("/api/v1/identify") == "/api/v1/identify"
