"""Compaction on the KubeRay cluster: the same submission as `ufme-ray compact` (ufme_ray.jobs.submit),
with the settings the running Serve application uses.

The compaction job must compact the gallery the service serves: its storage URI, shard count and
embedding dimension. On Kubernetes those come from two places, both read here: the UFME_* variables
of this pod (the ufme-config ConfigMap: UFME_STORAGE_URI, …) and the `args.settings` of the ufme
application in the RayService's serveConfigV2 (e.g. gallery.num_shards), which outrank the
environment exactly as they do in the Serve replicas (`build_app`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import yaml

from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.k8s.errors import CompactionError

APP_NAME = "ufme"


def app_settings(serve_config_v2: str | None) -> dict[str, Any]:
    """`args.settings` of the ufme application in a serveConfigV2 string ({} if absent)."""
    if not serve_config_v2:
        return {}
    try:
        parsed = yaml.safe_load(serve_config_v2) or {}
    except yaml.YAMLError as exc:
        raise CompactionError(f"the RayService's serveConfigV2 is not YAML: {exc}") from None
    for app in parsed.get("applications", []):
        if app.get("name") == APP_NAME:
            return dict((app.get("args") or {}).get("settings") or {})
    raise CompactionError(f"the RayService's serveConfigV2 has no application {APP_NAME!r}")


def job_settings(serve_config_v2: str | None, *, num_shards: int | None = None) -> UfmeSettings:
    """This process's UFME_* environment with the Serve app's explicit settings on top."""
    overrides = app_settings(serve_config_v2)
    if num_shards is not None:
        overrides.setdefault("gallery", {})["num_shards"] = num_shards
    try:
        return UfmeSettings.load(**overrides)
    except ConfigError as exc:
        raise CompactionError(f"the compaction settings are invalid: {exc}") from None


@dataclass(frozen=True)
class CompactionRun:
    submission_id: str
    status: str
    created: bool  # False: the slot's job existed already and was reported / followed

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def compact(
    address: str,
    *,
    token: str | None,
    settings: UfmeSettings,
    slot: str | None = None,
    wait: bool = True,
    write: Callable[[str], None] = lambda chunk: None,
) -> CompactionRun:
    """Submit the compaction job for `slot` (default: this UTC hour) unless it exists, then follow it.

    One job per slot: a retried trigger (the CronJob's backoffLimit) finds the slot's job and
    follows it instead of starting a second compaction. Blocks until the job ends when `wait`.
    Raises CompactionError if the job server cannot be reached or refuses.
    """
    from ufme_ray.jobs import submit
    from ufme_ray.jobs.compact import embedding_dim
    from ufme_ray.serving.cluster import ClusterError

    try:
        client = submit.connect(address, token)
        slot = slot or submit.slot_for(datetime.now(timezone.utc))
        job = submit.submit(client, settings, slot=slot, dim=embedding_dim(settings))
        if not wait:
            return CompactionRun(job.submission_id, job.status, job.created)
        status = submit.follow(client, job.submission_id, write)
    except ClusterError as exc:
        raise CompactionError(str(exc)) from None
    return CompactionRun(job.submission_id, status, job.created)
