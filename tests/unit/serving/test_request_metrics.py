"""Every request is counted and timed under its route's template and the status it got."""

from __future__ import annotations

import types

import pytest

from tests.unit.serving.conftest import AS_SEARCHER, IMAGE
from ufme_ray.serving.api import app as api_app


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict]] = []

    def sink(self, name: str):
        recorded = self

        class Sink:
            def inc(self, value=1.0, tags=None):
                recorded.calls.append((name, value, tags))

            def observe(self, value, tags=None):
                recorded.calls.append((name, value, tags))

        return Sink()


@pytest.fixture
def recorded(service, monkeypatch):
    record = Recorded()
    metrics = types.SimpleNamespace(requests=record.sink("requests"), latency=record.sink("latency"))
    monkeypatch.setattr(api_app, "installed_services", lambda: types.SimpleNamespace(metrics=metrics))
    return record


def counted(recorded: Recorded) -> list[dict]:
    return [tags for name, _, tags in recorded.calls if name == "requests"]


def test_a_request_is_counted_under_its_route_template_and_status(service, recorded):
    client, _, _ = service
    assert client.get("/api/v1/galleries/default/subjects/alice", headers=AS_SEARCHER).status_code == 403
    assert client.get("/health").status_code == 200
    assert counted(recorded) == [
        {"endpoint": "GET /api/v1/galleries/{gallery_id}/subjects/{subject_id}", "status": "403"},
        {"endpoint": "GET /health", "status": "200"},
    ]
    timed = [(value, tags) for name, value, tags in recorded.calls if name == "latency"]
    assert [tags for _, tags in timed] == [{"endpoint": e["endpoint"]} for e in counted(recorded)]
    assert all(value > 0 for value, _ in timed)


def test_a_path_no_route_matches_is_counted_as_unmatched(service, recorded):
    client, _, _ = service
    assert client.get("/api/v1/nowhere").status_code == 404
    assert counted(recorded) == [{"endpoint": "GET unmatched", "status": "404"}]


def test_an_error_that_escapes_the_routes_is_counted_as_the_500_it_becomes(service, recorded, monkeypatch):
    client, _, services = service

    async def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(services.engine, "identify", broken)
    assert client.post("/api/v1/identify", files=IMAGE, headers=AS_SEARCHER).status_code == 500
    assert counted(recorded) == [{"endpoint": "POST /api/v1/identify", "status": "500"}]
