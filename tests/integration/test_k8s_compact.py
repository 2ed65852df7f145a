"""`ufme-ray k8s compact` end to end: the Kubernetes API server is the local fake (there is none
here; tests/unit/k8s/conftest.py), the Ray dashboard is the REAL one of the session's cluster,
with its real token. Jobs a test needs to exist already ("running", "already ran", "failed") are
submitted for real under the slot's submission id with a trivial entrypoint; a compaction job the
CLI submits is checked on the dashboard and stopped at once, so it never runs beside other tests.
Every test uses slots of its own: the cluster and its job ids are shared by the session."""

from __future__ import annotations

import re
import shlex
import time
import uuid
from datetime import datetime, timezone

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from tests.unit.fake_http import FakeServer
from tests.unit.k8s.conftest import fake_server, kubeconfig, secret  # noqa: F401  (fixtures, used by name)
from tests.unit.k8s.test_cli import compaction_env, run  # noqa: F401  (fixture, used by name)
from tests.unit.k8s.test_client import RS_PATH, rayservice_object, serve_status
from ufme_ray import cluster

pytestmark = pytest.mark.ray

WAIT_S = 120  # generous: this 2-core machine may run another test session's cluster too
SECRET_PATH = "/api/v1/namespaces/ufme/secrets/ufme-ray-auth"
SLEEPER = 'python -c "import time; time.sleep(600)"'


@pytest.fixture(scope="module")
def token(ray_session) -> str:
    """The session cluster's real token (read before compaction_env clears RAY_AUTH_TOKEN)."""
    return cluster.ensure_auth_token()


@pytest.fixture(scope="module")
def dashboard(ray_session) -> str:
    return ray_session["dashboard"]


@pytest.fixture(scope="module")
def jobs(dashboard: str, token: str) -> JobSubmissionClient:
    return JobSubmissionClient(dashboard, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def slot() -> str:
    """A slot no other test (of this or an earlier run on this cluster) has used."""
    return f"k8s-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def stop_afterwards(jobs: JobSubmissionClient):
    """Submission ids to stop (and wait out) after the test, whatever it asserted."""
    ids: list[str] = []
    yield ids
    for submission_id in ids:
        try:
            jobs.stop_job(submission_id)
        except RuntimeError:
            continue  # never submitted
        wait_for(jobs, submission_id, lambda status: status.is_terminal())


def wait_for(jobs: JobSubmissionClient, submission_id: str, wanted) -> JobStatus:
    deadline = time.monotonic() + WAIT_S
    status = jobs.get_job_status(submission_id)
    while not wanted(status):
        assert time.monotonic() < deadline, f"job {submission_id} still {status.value} after {WAIT_S} s"
        time.sleep(0.5)
        status = jobs.get_job_status(submission_id)
    return status


def job_of_slot(jobs: JobSubmissionClient, slot: str, entrypoint: str, status: JobStatus) -> str:
    """Submit `ufme-compact-<slot>` for real with `entrypoint` and wait until it is `status`."""
    submission_id = f"ufme-compact-{slot}"
    jobs.submit_job(entrypoint=entrypoint, submission_id=submission_id, entrypoint_num_cpus=0)
    assert wait_for(jobs, submission_id, lambda s: s == status or s.is_terminal()) == status
    return submission_id


def submission_ids(jobs: JobSubmissionClient) -> set[str]:
    return {job.submission_id for job in jobs.list_jobs()}


def ended_at(jobs: JobSubmissionClient, submission_id: str) -> str:
    end_time = jobs.get_job_info(submission_id).end_time
    assert end_time
    return f"{datetime.fromtimestamp(end_time / 1000, timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def test_compact_submits_the_jobs_entrypoint_with_the_services_settings(
    kubeconfig, fake_server: FakeServer, dashboard, token, jobs, slot, stop_afterwards, compaction_env, monkeypatch, capsys
):
    # The dashboard does not report a job's entrypoint_num_cpus (and Ray's default is 0 as well):
    # what the CLI asked for is recorded on the way to the real submit_job.
    asked: list[dict] = []
    real_submit_job = JobSubmissionClient.submit_job

    def submit_job(self, **kwargs):
        asked.append(kwargs)
        return real_submit_job(self, **kwargs)

    monkeypatch.setattr(JobSubmissionClient, "submit_job", submit_job)
    serve_status(fake_server)  # RayService Ready, serveConfigV2 num_shards 5
    fake_server.on("GET", SECRET_PATH, (200, secret(token)))  # the real token, read from the Secret
    wanted = f"ufme-compact-{slot}"
    stop_afterwards.append(wanted)
    code = run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", dashboard, "--no-wait", "--slot", slot)
    out, err = capsys.readouterr()
    assert code == 0, err
    info = jobs.get_job_info(wanted)
    jobs.stop_job(wanted)  # the job is the real compaction: it must not run beside other tests
    assert info.submission_id == wanted
    argv = shlex.split(info.entrypoint)
    assert argv[:3] == ["python", "-m", "ufme_ray.jobs.compact"]
    assert argv[argv.index("--num-shards") + 1] == "5"  # from the RayService's serveConfigV2
    assert argv[argv.index("--storage-uri") + 1] == "s3://ufme-gallery/production?endpoint_override=s3.test:9000"  # from the pod env
    (request,) = asked
    assert request["submission_id"] == wanted and request["entrypoint_num_cpus"] == 0
    assert info.metadata == {"ufme": "compaction", "slot": slot}
    assert f"submitted compaction job {wanted} (5 shards, s3://ufme-gallery/production) on {dashboard}: " in out
    # Only what the CronJob's Role grants (get rayservices/ufme), plus the token Secret read that
    # the CronJob does not need (its pod has RAY_AUTH_TOKEN).
    assert {(r.method, r.path) for r in fake_server.requests} == {("GET", RS_PATH), ("GET", SECRET_PATH)}
    # Stopped at once (it could only have FAILED first: s3.test is no S3 server), so not running beside other tests.
    assert wait_for(jobs, wanted, lambda status: status.is_terminal()) in {JobStatus.STOPPED, JobStatus.FAILED}


def test_the_token_from_the_secret_is_what_the_dashboard_sees(kubeconfig, fake_server, dashboard, jobs, slot, compaction_env, capsys):
    """A wrong token in the Secret is refused by the real dashboard (this process could find the
    right one in ~/.ray: the CLI's header is the one sent)."""
    serve_status(fake_server)
    fake_server.on("GET", SECRET_PATH, (200, secret("not-the-cluster-token")))
    before = submission_ids(jobs)
    code = run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", dashboard, "--no-wait", "--slot", slot)
    assert code == 1
    assert "ufme-ray: error: " in capsys.readouterr().err  # exit 1 with a message, not a traceback
    assert submission_ids(jobs) == before
    assert ("GET", SECRET_PATH) in {(r.method, r.path) for r in fake_server.requests}


def test_compact_finds_the_slots_job_instead_of_starting_another(
    kubeconfig, fake_server, dashboard, token, jobs, slot, stop_afterwards, compaction_env, capsys
):
    serve_status(fake_server)
    fake_server.on("GET", SECRET_PATH, (200, secret(token)))
    stop_afterwards.append(f"ufme-compact-{slot}")
    running = job_of_slot(jobs, slot, SLEEPER, JobStatus.RUNNING)
    before = submission_ids(jobs)
    code = run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", dashboard, "--no-wait", "--slot", slot)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"found compaction job {running} (5 shards, s3://ufme-gallery/production) on {dashboard}: RUNNING" in out
    assert submission_ids(jobs) == before  # nothing submitted
    assert jobs.get_job_info(running).entrypoint == SLEEPER  # the slot's own job, untouched
    assert jobs.get_job_status(running) == JobStatus.RUNNING


def test_compact_of_a_slot_that_already_ran_exits_3_and_compacts_nothing(
    dashboard, token, jobs, slot, stop_afterwards, compaction_env, monkeypatch, capsys
):
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    done = job_of_slot(jobs, slot, 'python -c "pass"', JobStatus.SUCCEEDED)
    before = submission_ids(jobs)
    argv = ("k8s", "compact", "--skip-status-check", "--address", dashboard, "--shards", "2")
    assert run(*argv, "--slot", slot) == 3
    out, err = capsys.readouterr()
    assert out == "" and submission_ids(jobs) == before
    assert err.startswith(f"ufme-ray: error: the compaction of slot {slot} already ran: job {done} ")
    assert f"ended SUCCEEDED at {ended_at(jobs, done)}" in err
    assert "nothing new was compacted" in err and "--now" in err
    # --now compacts in a slot of its own (the UTC second) instead.
    assert run(*argv, "--now", "--no-wait") == 0
    out = capsys.readouterr().out
    match = re.search(r"submitted compaction job (ufme-compact-\S+) \(2 shards, ", out)
    assert match, out
    stop_afterwards.append(match[1])
    jobs.stop_job(match[1])
    assert re.fullmatch(r"ufme-compact-\d{8}T\d{6}Z", match[1])
    assert submission_ids(jobs) == before | {match[1]}
    assert shlex.split(jobs.get_job_info(match[1]).entrypoint)[:3] == ["python", "-m", "ufme_ray.jobs.compact"]


def test_a_scheduled_retry_of_a_slot_whose_job_succeeded_is_done_not_failed(
    dashboard, token, jobs, slot, compaction_env, monkeypatch, capsys
):
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    done = job_of_slot(jobs, slot, 'python -c "pass"', JobStatus.SUCCEEDED)
    before = submission_ids(jobs)
    argv = ("k8s", "compact", "--skip-status-check", "--address", dashboard, "--shards", "2", "--slot", slot)
    assert run(*argv, "--scheduled") == 0
    assert f"compaction job {done} of this slot already SUCCEEDED: the scheduled run is done" in capsys.readouterr().out
    assert submission_ids(jobs) == before


def test_a_scheduled_retry_of_a_slot_whose_job_failed_still_exits_3(
    dashboard, token, jobs, slot, compaction_env, monkeypatch, capsys
):
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    failed = job_of_slot(jobs, slot, 'python -c "raise SystemExit(1)"', JobStatus.FAILED)
    before = submission_ids(jobs)
    argv = ("k8s", "compact", "--skip-status-check", "--address", dashboard, "--shards", "2", "--slot", slot)
    assert run(*argv, "--scheduled") == 3
    err = capsys.readouterr().err
    assert f"job {failed} ended FAILED at {ended_at(jobs, failed)}" in err
    assert submission_ids(jobs) == before


@pytest.mark.parametrize(
    ("rayservice", "reason"),
    [
        (rayservice_object(ready=False, app="DEPLOYING"), "not Ready"),
        (rayservice_object(pending="ufme-new42"), "upgrade to a new RayCluster"),
    ],
)
def test_compact_refuses_while_the_service_is_not_ready_or_upgrading(
    kubeconfig, fake_server, dashboard, token, jobs, slot, compaction_env, capsys, rayservice, reason
):
    serve_status(fake_server, rayservice=rayservice)
    fake_server.on("GET", SECRET_PATH, (200, secret(token)))
    before = submission_ids(jobs)
    assert run("k8s", "compact", "--kubeconfig", str(kubeconfig), "--address", dashboard, "--no-wait", "--slot", slot) == 1
    assert reason in capsys.readouterr().err
    assert submission_ids(jobs) == before
    assert f"ufme-compact-{slot}" not in before
    assert ("GET", SECRET_PATH) not in {(r.method, r.path) for r in fake_server.requests}  # refused before the token
