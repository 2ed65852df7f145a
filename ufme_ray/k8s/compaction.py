"""The settings of a compaction job on the KubeRay cluster; `ufme_ray.jobs.submit.run_compaction`
submits it, as for `ufme-ray compact`.

The compaction job must compact the gallery the service serves: its storage URI, shard count and
embedding dimension. On Kubernetes those come from two places, both read here: the UFME_* variables
of this pod (the ufme-config ConfigMap: UFME_STORAGE_URI, …) and the `args.settings` of the ufme
application in the RayService's serveConfigV2 (e.g. gallery.num_shards), which outrank the
environment exactly as they do in the Serve replicas (`build_app`).
"""

from __future__ import annotations

from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.k8s.errors import CompactionError
from ufme_ray.serve_config import app_args


def job_settings(serve_config_v2: str | None, *, num_shards: int | None = None) -> UfmeSettings:
    """This process's UFME_* environment with the Serve app's explicit settings on top.

    Raises CompactionError if the serveConfigV2 or the settings are invalid.
    """
    try:
        overrides = app_args(serve_config_v2).settings if serve_config_v2 else {}
    except ConfigError as exc:
        raise CompactionError(f"the RayService's serveConfigV2: {exc}") from None
    if num_shards is not None:
        overrides = {**overrides, "gallery": {**overrides.get("gallery", {}), "num_shards": num_shards}}
    try:
        return UfmeSettings.load(**overrides)
    except ConfigError as exc:
        raise CompactionError(f"the compaction settings are invalid: {exc}") from None
