"""Submitting the compaction job through Ray's JobSubmissionClient and following it: `run_compaction`,
for `ufme-ray compact` and `ufme-ray k8s compact` alike.

Idempotent per schedule slot: the submission id is `ufme-compact-<slot>` (by default the UTC
hour, the slot of the hourly schedule), so a second submission for a slot finds the slot's job
instead of starting another: one still running is followed (a retried trigger), one that has
ended is refused loudly (CompactionAlreadyRanError: nothing new would be compacted; `--now`
takes a slot of its own, the UTC second). The job gets the submitter's storage URI, shard
count and dimension as flags and its compaction and testing settings as UFME_COMPACTION and
UFME_TESTING (JSON) in the runtime environment, so it compacts the gallery the submitter means, the way the submitter
configured, whatever the cluster's environment says.

Token auth: the client sends the cluster's token as a Bearer header (Ray 2.60 turns token auth on
for local clusters), so it works whether or not RAY_AUTH_MODE=token is set in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shlex
import time
from collections.abc import Callable
from datetime import datetime, timezone

from typing import TYPE_CHECKING

import requests

from ufme_ray.cluster import ClusterError
from ufme_ray.config import UfmeSettings

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

SUBMISSION_PREFIX = "ufme-compact-"
_SLOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_POLL_S = 1.0


def slot_for(now: datetime) -> str:
    """The hourly schedule slot of `now` (an aware datetime), e.g. 20260301T14Z."""
    if now.tzinfo is None:
        raise ValueError("slot_for needs an aware datetime")
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%HZ")


def instant_slot(now: datetime) -> str:
    """A slot of its own for a compaction run now (`--now`): the UTC second, e.g. 20260301T141503Z."""
    if now.tzinfo is None:
        raise ValueError("instant_slot needs an aware datetime")
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def submission_id(slot: str) -> str:
    """`ufme-compact-<slot>`. Raises ValueError unless the slot is 1-64 of [A-Za-z0-9._-]."""
    if not _SLOT_RE.match(slot):
        raise ValueError(f"slot {slot!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return SUBMISSION_PREFIX + slot


def entrypoint(settings: UfmeSettings, *, dim: int) -> str:
    """The job's shell command line for these settings."""
    return shlex.join(
        [
            "python", "-m", "ufme_ray.jobs.compact",
            "--storage-uri", settings.resolved_storage_uri,
            "--num-shards", str(settings.gallery.num_shards),
            "--dim", str(dim),
        ]
    )


# Sections the job reads beyond its flags that travel only when the submitter's file or UFME_* set
# them: the cluster's own (e.g. encryption keys from a Secret on the head pod) are not blanked out.
_JOB_SECTIONS_IF_SET = ("gallery", "encryption")


def job_env(settings: UfmeSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The job's environment variables: the compaction settings, the gallery (index build) and
    encryption settings the submitter's settings file or environment set, then `extra`.

    The testing switches travel too: without them the job would refuse fault-injection settings.
    """
    env = {"UFME_COMPACTION": settings.compaction.model_dump_json(), "UFME_TESTING": settings.testing.model_dump_json()}
    explicit = settings.explicit_values()
    for section in _JOB_SECTIONS_IF_SET:
        if explicit.get(section):
            env[f"UFME_{section.upper()}"] = json.dumps(explicit[section])
    return {**env, **(extra or {})}


_TERMINAL = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})  # JobStatus.is_terminal(), without importing Ray


@dataclasses.dataclass(frozen=True)
class Submission:
    submission_id: str
    status: str
    created: bool  # False: the slot's job existed already and is reported instead
    ended_at: datetime | None = None  # when a job that existed already had ended

    @property
    def ended(self) -> bool:
        return self.status in _TERMINAL


class CompactionAlreadyRanError(RuntimeError):
    """The slot's compaction job had already ended: submitting again compacts nothing new."""

    def __init__(self, job: Submission, slot: str):
        hour = " (this UTC hour)" if slot == slot_for(datetime.now(timezone.utc)) else ""
        ended = f" at {job.ended_at:%Y-%m-%d %H:%M:%S} UTC" if job.ended_at else ""
        super().__init__(
            f"the compaction of slot {slot}{hour} already ran: job {job.submission_id} ended {job.status}{ended}; "
            "nothing new was compacted. To compact now, run again with --now (a slot of its own)"
        )
        self.job = job


def _job_server_errors() -> tuple[type[BaseException], ...]:
    """What the job client raises when the server is unreachable, refuses, or rejects the token."""
    from ray.exceptions import AuthenticationError  # Ray is heavy: the CLI imports this module for its errors

    return (ConnectionError, requests.RequestException, RuntimeError, AuthenticationError)


def connect(address: str, token: str | None) -> JobSubmissionClient:
    """A client for the dashboard at `address`. Raises ClusterError if it cannot be reached or
    refuses the token."""
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except _job_server_errors() as exc:
        raise ClusterError(f"cannot reach the Ray job server at {address}: {exc}") from exc


def _find(client: JobSubmissionClient, wanted: str):
    return next((job for job in client.list_jobs() if job.submission_id == wanted), None)


def _existing(job) -> Submission:
    ended_at = datetime.fromtimestamp(job.end_time / 1000, timezone.utc) if job.end_time else None
    return Submission(job.submission_id, job.status.value, created=False, ended_at=ended_at)


def submit(
    client: JobSubmissionClient, settings: UfmeSettings, *, slot: str, dim: int, env_vars: dict[str, str] | None = None
) -> Submission:
    """Submit the slot's compaction job unless it exists; returns it either way.

    `env_vars` are added to the job's runtime environment (its driver and tasks). Raises ClusterError
    if the job server refuses, ValueError for a bad slot.
    """
    wanted = submission_id(slot)
    try:
        existing = _find(client, wanted)
        if existing is not None:
            return _existing(existing)
        try:
            client.submit_job(
                entrypoint=entrypoint(settings, dim=dim),
                submission_id=wanted,
                runtime_env={"env_vars": job_env(settings, env_vars)},
                metadata={"ufme": "compaction", "slot": slot},
                entrypoint_num_cpus=0,
            )
        except RuntimeError:
            raced = _find(client, wanted)  # another submitter took the slot between our look and our submit
            if raced is None:
                raise
            return _existing(raced)
        return Submission(wanted, client.get_job_status(wanted).value, created=True)
    except _job_server_errors() as exc:
        raise ClusterError(f"submitting {wanted}: {exc}") from exc


def follow(client: JobSubmissionClient, wanted: str, write: Callable[[str], None]) -> str:
    """Stream the job's log through `write` until it ends; returns its final status (e.g. SUCCEEDED).

    Blocks until the job reaches a terminal state. Raises ClusterError if the job server fails.
    """

    async def tail() -> None:
        async for chunk in client.tail_job_logs(wanted):
            write(chunk)

    try:
        asyncio.run(tail())
        status = client.get_job_status(wanted)
        while not status.is_terminal():  # the log can close a moment before the status is final
            time.sleep(_POLL_S)
            status = client.get_job_status(wanted)
    except _job_server_errors() as exc:
        raise ClusterError(f"following {wanted}: {exc}") from exc
    return status.value


def run_compaction(
    address: str,
    token: str | None,
    settings: UfmeSettings,
    *,
    slot: str,
    wait: bool,
    write: Callable[[str], None],
    on_submitted: Callable[[Submission], None] = lambda job: None,
) -> Submission:
    """Submit the slot's compaction job (or find it), report it to `on_submitted`, and with `wait`
    stream its log through `write` until it ends. Returns the job with its last status.

    A job of the slot still PENDING or RUNNING is followed, not started again (a retried trigger).
    Raises CompactionAlreadyRanError if the slot's job had already ended, ClusterError if the job
    server cannot be reached or refuses, ValueError for a bad slot.
    """
    from ufme_ray.jobs.compact import embedding_dim  # imports Ray

    client = connect(address, token)
    job = submit(client, settings, slot=slot, dim=embedding_dim(settings))
    if not job.created and job.ended:
        raise CompactionAlreadyRanError(job, slot)
    on_submitted(job)
    if not wait:
        return job
    return dataclasses.replace(job, status=follow(client, job.submission_id, write))
