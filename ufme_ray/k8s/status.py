"""What `ufme-ray k8s status` reports about the RayService, read from its object and its pods."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ufme_ray.config import ConfigError
from ufme_ray.serve_config import APP_NAME, app_args


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class ServiceStatus:
    """What `ufme-ray k8s status` reports about the RayService."""

    name: str
    namespace: str
    conditions: list[Condition]
    active_cluster: str | None
    pending_cluster: str | None
    app_status: str | None
    app_message: str
    deployments: dict[str, str]
    expected_shards: int | None
    shard_pods_ready: int
    shard_pods_total: int
    gallery: dict[str, Any] | None = None
    gallery_error: str | None = None
    observed_generation: int | None = None
    generation: int | None = None

    def condition(self, type_: str) -> bool:
        return any(c.type == type_ and c.status == "True" for c in self.conditions)

    @property
    def ready(self) -> bool:
        """RayService Ready, Serve app RUNNING, every shard pod ready and (if seen) every shard restored."""
        shards_ok = self.expected_shards is None or self.shard_pods_ready >= self.expected_shards
        gallery_ok = self.gallery is None or bool(self.gallery.get("ready"))
        return self.condition("Ready") and self.app_status == "RUNNING" and shards_ok and gallery_ok

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ready": self.ready}

    def summary(self) -> str:
        lines = [f"RayService {self.namespace}/{self.name}: {'READY' if self.ready else 'NOT READY'}"]
        for c in self.conditions:
            lines.append(f"  condition {c.type}={c.status}" + (f" ({c.reason}: {c.message})" if c.reason or c.message else ""))
        lines.append(f"  active cluster: {self.active_cluster or '-'}   pending cluster: {self.pending_cluster or '-'}")
        lines.append(f"  Serve app {APP_NAME}: {self.app_status or 'unknown'}" + (f" ({self.app_message})" if self.app_message else ""))
        for name, status in sorted(self.deployments.items()):
            lines.append(f"    {name}: {status}")
        expected = "?" if self.expected_shards is None else str(self.expected_shards)
        lines.append(f"  shard pods ready: {self.shard_pods_ready}/{self.shard_pods_total} (expected {expected})")
        if self.gallery is not None:
            lines.append(f"  gallery: {self.gallery.get('shards_ready')}/{self.gallery.get('num_shards')} shards restored")
        elif self.gallery_error:
            lines.append(f"  gallery: not checked ({self.gallery_error})")
        return "\n".join(lines)


def expected_shards(serve_config_v2: str | None) -> int | None:
    """num_shards of the ufme application in a serveConfigV2 string (the settings default if unset);
    None without a readable one (the status then reports the shard count as unknown)."""
    if not serve_config_v2:
        return None
    try:
        return app_args(serve_config_v2).num_shards
    except ConfigError:
        return None
