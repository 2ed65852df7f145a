"""The compaction job's inputs, without a cluster: flags over environment, submission ids, entrypoint."""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timedelta, timezone

import pytest

from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.jobs import submit
from ufme_ray.jobs.compact import Deadline, build_parser, load_settings

S3 = "s3://bucket/gallery?endpoint_override=127.0.0.1:9000&scheme=http"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("UFME_")]:
        monkeypatch.delenv(key)


def test_environment_then_flags(monkeypatch):
    monkeypatch.setenv("UFME_COMPACTION__RETENTION_S", "0")
    monkeypatch.setenv("UFME_STORAGE_URI", "file:///srv/ufme")
    settings = load_settings(build_parser().parse_args([]))
    assert settings.compaction.retention_s == 0 and settings.compaction.deadline_s == 3600
    assert settings.resolved_storage_uri == "file:///srv/ufme"
    args = build_parser().parse_args(["--storage-uri", S3, "--num-shards", "5", "--retention-s", "60", "--namespace", "g2"])
    settings = load_settings(args)
    assert (settings.storage_uri, settings.gallery.num_shards) == (S3, 5)
    assert (settings.compaction.retention_s, settings.compaction.namespace) == (60, "g2")


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("UFME_COMPACTION__CRASH_AT", "commit")
    with pytest.raises(ConfigError, match="compaction.crash_at"):
        load_settings(build_parser().parse_args([]))
    monkeypatch.delenv("UFME_COMPACTION__CRASH_AT")
    with pytest.raises(ConfigError, match="compaction.deadline_s"):
        load_settings(build_parser().parse_args(["--deadline-s", "0"]))


@pytest.mark.parametrize("fault", [{"crash_at": "build"}, {"crash_at": "swap"}, {"delay_commit_s": 2}])
def test_fault_injection_needs_the_testing_switch(monkeypatch, fault):
    (name, _), = fault.items()
    with pytest.raises(ConfigError, match=rf"compaction\.{name}\) is refused unless testing\.fault_injection is true"):
        UfmeSettings.load(compaction=fault)
    assert UfmeSettings.load(compaction=fault, testing={"fault_injection": True}).compaction.model_dump()[name]
    # The switch through the environment, and the job's environment carries it to the job.
    monkeypatch.setenv("UFME_TESTING__FAULT_INJECTION", "1")
    env = submit.job_env(UfmeSettings.load(compaction=fault))
    monkeypatch.delenv("UFME_TESTING__FAULT_INJECTION")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings(build_parser().parse_args([])).testing.fault_injection


def test_submission_id_per_hourly_slot():
    at = datetime(2026, 3, 1, 14, 59, 59, tzinfo=timezone(timedelta(hours=2)))
    assert submit.slot_for(at) == "20260301T12Z"
    assert submit.submission_id(submit.slot_for(at)) == "ufme-compact-20260301T12Z"
    with pytest.raises(ValueError):
        submit.slot_for(datetime(2026, 3, 1, 14))
    for bad in ["", "a b", "-x", "x" * 65, "a/b"]:
        with pytest.raises(ValueError):
            submit.submission_id(bad)


def test_entrypoint_and_environment_carry_the_submitters_settings():
    settings = UfmeSettings.load(storage_uri=S3, gallery={"num_shards": 5}, compaction={"retention_s": 0, "task_num_cpus": 2})
    argv = shlex.split(submit.entrypoint(settings, dim=512))
    assert argv[:3] == ["python", "-m", "ufme_ray.jobs.compact"]
    args = build_parser().parse_args(argv[3:])
    assert (args.storage_uri, args.num_shards, args.dim) == (S3, 5, 512)
    env = submit.job_env(settings, {"AWS_REGION": "eu-west-1"})
    assert env["AWS_REGION"] == "eu-west-1"
    assert json.loads(env["UFME_COMPACTION"])["task_num_cpus"] == 2


def test_deadline():
    assert Deadline(60).remaining_s() > 59
    with pytest.raises(TimeoutError, match="before step 'swap'"):
        Deadline(1e-9).check("swap")
