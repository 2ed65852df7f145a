"""Submitting the compaction job through Ray's JobSubmissionClient and following it (`ufme-ray compact`).

Idempotent per schedule slot: the submission id is `ufme-compact-<slot>` (by default the UTC
hour, the slot of the hourly schedule), so a second submission for a slot finds the slot's job
and reports it instead of starting another. The job gets the submitter's storage URI, shard
count and dimension as flags and its compaction settings as UFME_COMPACTION (JSON) in the
runtime environment, so it compacts the gallery the submitter means, the way the submitter
configured, whatever the cluster's environment says.

Token auth: the client sends the cluster's token as a Bearer header (Ray 2.60 turns token auth on
for local clusters), so it works whether or not RAY_AUTH_MODE=token is set in this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shlex
import time
from collections.abc import Callable
from datetime import datetime, timezone

import requests
from ray.job_submission import JobSubmissionClient

from ufme_ray.config import UfmeSettings
from ufme_ray.serving.cluster import ClusterError

SUBMISSION_PREFIX = "ufme-compact-"
_SLOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_POLL_S = 1.0


def slot_for(now: datetime) -> str:
    """The hourly schedule slot of `now` (an aware datetime), e.g. 20260301T14Z."""
    if now.tzinfo is None:
        raise ValueError("slot_for needs an aware datetime")
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%HZ")


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


def job_env(settings: UfmeSettings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The job's environment variables: the compaction settings, then `extra`."""
    return {"UFME_COMPACTION": settings.compaction.model_dump_json(), **(extra or {})}


@dataclasses.dataclass(frozen=True)
class Submission:
    submission_id: str
    status: str
    created: bool  # False: the slot's job existed already and is reported instead


def connect(address: str, token: str | None) -> JobSubmissionClient:
    """A client for the dashboard at `address`. Raises ClusterError if it cannot be reached."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except (ConnectionError, requests.RequestException, RuntimeError) as exc:
        raise ClusterError(f"cannot reach the Ray job server at {address}: {exc}") from exc


def _find(client: JobSubmissionClient, wanted: str):
    return next((job for job in client.list_jobs() if job.submission_id == wanted), None)


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
            return Submission(wanted, existing.status.value, created=False)
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
            return Submission(wanted, raced.status.value, created=False)
        return Submission(wanted, client.get_job_status(wanted).value, created=True)
    except (RuntimeError, requests.RequestException) as exc:
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
    except (RuntimeError, requests.RequestException) as exc:
        raise ClusterError(f"following {wanted}: {exc}") from exc
    return status.value
