"""The Gateway deployment: the FastAPI ingress, wired to the orchestration over stage handles."""

from __future__ import annotations

import asyncio

from ray import serve
from ray.serve._private.constants import (
    RAY_SERVE_PROXY_USE_GRPC,
    RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH,
    RAY_SERVE_USE_GRPC_BY_DEFAULT,
)

from ufme_ray import serve_transport
from ufme_ray.audit import SubjectPseudonyms
from ufme_ray.config import ImageLimits, UfmeSettings
from ufme_ray.gallery.encryption import open_configured_storage
from ufme_ray.orchestration.audit_trail import AuditTrail
from ufme_ray.orchestration.demo import DemoLoader
from ufme_ray.orchestration.engine import Engine, Intake
from ufme_ray.orchestration.refusals import RefusalAggregator
from ufme_ray.serving.api.app import create_api
from ufme_ray.serving.api.dependencies import Services, install_services
from ufme_ray.serving.auth import KeyStore
from ufme_ray.serving.handles import GalleryHandle, StageHandles
from ufme_ray.serving.metrics import ServiceMetrics
from ufme_ray.serving.rate_limiter import ActorRateLimiter
from ufme_ray.serving.shard_calls import ShardDirectory

api = create_api()


def check_transport(limits: ImageLimits) -> None:
    """Raises ConfigError when this node's replicas would refuse an image `limits` accept: over gRPC
    (serve_transport) a replica refuses a message over its limit, the Detector an image, the
    Gateway a request from the proxy. Ray's constants are what this process read at start."""
    if RAY_SERVE_USE_GRPC_BY_DEFAULT or RAY_SERVE_PROXY_USE_GRPC:
        serve_transport.check_message_limit(limits, RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH)


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, settings_json: str, detector, quality, liveness, morph, embedder, searcher):
        settings = UfmeSettings.model_validate_json(settings_json)
        check_transport(settings.image)
        # What every user_config is laid over: the settings resolved at deploy (file < UFME_* < args.settings).
        self._base_live = settings.live_config()
        gallery = GalleryHandle(searcher, ShardDirectory(settings.gallery.num_shards))
        metrics = ServiceMetrics()
        self._engine = Engine(settings, StageHandles(detector, quality, liveness, morph, embedder), gallery, metrics)
        store = open_configured_storage(settings)
        self._audit = AuditTrail(
            store,
            SubjectPseudonyms.from_settings(settings.audit),
            gallery.status,
            RefusalAggregator(settings.audit.refusal_window_s, settings.audit.refusal_max_kinds),
        )
        install_services(
            Services(
                settings=settings,
                engine=self._engine,
                audit=self._audit,
                keys=KeyStore(settings.auth),
                demo=DemoLoader(
                    # Demo photos are files: stored captures, liveness not applicable.
                    lambda subject_id, data, gallery_id: self._engine.enrol(
                        subject_id, data, operation="demo", gallery_id=gallery_id, intake=Intake("stored")
                    ),
                    default_folder=settings.demo_dir,
                    max_bytes=settings.image.max_bytes,
                ),
                metrics=metrics,
                limiter=ActorRateLimiter(),
                store=store,
            )
        )

    def reconfigure(self, user_config: dict | None) -> None:
        """Thresholds, gates and the duplicate policy change live; an invalid config is refused whole.

        Serve calls this on every replica start and on every user_config change with the whole
        user_config; the fields it sets are laid over the replica's settings (never over the
        previous user_config), so a field it leaves out keeps the settings' value, not a default.
        """
        self._engine.apply_live_config(self._base_live.overlay(user_config))

    def __del__(self):
        # Serve calls this in the replica's event loop when it stops the replica, and awaits what it
        # returns: the refusals counted so far reach the trail. Python's own finalizer call (no loop
        # running) has nothing to flush into.
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self._audit.flush()
