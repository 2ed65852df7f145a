"""`ufme-ray compact` against a fake Ray dashboard: one job per slot, a slot whose job already ended
is refused loudly (exit 3), a running one is followed, `--now` compacts in a slot of its own."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from ray.job_submission import JobSubmissionClient

from tests.unit.fake_http import FakeServer, ray_job, serve_job_api
from ufme_ray.cli import main
from ufme_ray.jobs.submit import slot_for


@pytest.fixture(autouse=True)
def environment(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token")
    monkeypatch.setenv("UFME_STORAGE_URI", "file:///srv/ufme/store")
    monkeypatch.setenv("UFME_GALLERY__NUM_SHARDS", "2")


def compact(dashboard: FakeServer, *argv: str) -> int:
    return main(["compact", "--address", dashboard.url, *argv])


@pytest.mark.parametrize("status", ["SUCCEEDED", "FAILED"])
def test_this_hours_job_already_ended_exits_3_and_says_so(fake_dashboard, capsys, status):
    slot = slot_for(datetime.now(timezone.utc))
    serve_job_api(fake_dashboard, [ray_job(f"ufme-compact-{slot}", status, end_time=1772373637000)])
    assert compact(fake_dashboard, "--wait") == 3
    out, err = capsys.readouterr()
    assert out == ""  # no replay of the old job's log, no "succeeded"
    assert err == (
        f"ufme-ray: error: the compaction of slot {slot} (this UTC hour) already ran: job ufme-compact-{slot} ended "
        f"{status} at 2026-03-01 14:00:37 UTC; nothing new was compacted. To compact now, run again with --now "
        "(a slot of its own)\n"
    )
    assert fake_dashboard.sent("POST") == []


def test_now_submits_a_new_job_in_a_slot_of_its_own(fake_dashboard, capsys):
    slot = slot_for(datetime.now(timezone.utc))
    serve_job_api(fake_dashboard, [ray_job(f"ufme-compact-{slot}", "SUCCEEDED", end_time=1772373637000)])
    assert compact(fake_dashboard, "--now") == 0
    (post,) = fake_dashboard.sent("POST", "/api/jobs/")
    assert re.fullmatch(r"ufme-compact-\d{8}T\d{6}Z", post.body["submission_id"])
    assert post.headers["authorization"] == "Bearer ray-token"
    assert capsys.readouterr().out == f"submitted compaction job {post.body['submission_id']} (PENDING) on {fake_dashboard.url}\n"


def test_a_running_job_of_the_slot_is_followed_not_started_again(fake_dashboard, monkeypatch, capsys):
    running = ray_job("ufme-compact-nightly", "RUNNING")
    serve_job_api(fake_dashboard, [running])

    async def tail_job_logs(self, job_id):  # the dashboard streams logs over a websocket; the fake has none
        assert job_id == "ufme-compact-nightly"
        yield "compacting shard 0\n"
        running["status"] = "SUCCEEDED"

    monkeypatch.setattr(JobSubmissionClient, "tail_job_logs", tail_job_logs)
    assert compact(fake_dashboard, "--wait", "--slot", "nightly") == 0
    assert capsys.readouterr().out == (
        f"slot nightly already has compaction job ufme-compact-nightly (RUNNING) on {fake_dashboard.url}\n"
        "compacting shard 0\n"
        "compaction job ufme-compact-nightly: SUCCEEDED\n"
    )
    assert fake_dashboard.sent("POST") == []


def test_a_job_that_fails_fails_the_command(fake_dashboard, monkeypatch, capsys):
    serve_job_api(fake_dashboard, [])

    async def tail_job_logs(self, job_id):
        job = next(j for j in self.list_jobs() if j.submission_id == job_id)
        assert job.status.value == "PENDING"
        fake_dashboard.on("GET", f"/api/jobs/{job_id}", (200, ray_job(job_id, "FAILED")))
        yield "GalleryShapeError\n"

    monkeypatch.setattr(JobSubmissionClient, "tail_job_logs", tail_job_logs)
    assert compact(fake_dashboard, "--wait", "--slot", "s1") == 1
    out = capsys.readouterr().out
    assert out.startswith("submitted compaction job ufme-compact-s1 (PENDING)") and out.endswith("ufme-compact-s1: FAILED\n")


def test_slot_and_now_exclude_each_other(fake_dashboard, capsys):
    with pytest.raises(SystemExit) as exited:
        compact(fake_dashboard, "--slot", "s1", "--now")
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
