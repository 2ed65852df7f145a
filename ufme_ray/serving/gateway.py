"""The Gateway deployment: the FastAPI ingress, wired to the orchestration over stage handles."""

from __future__ import annotations

from ray import serve

from ufme_ray.audit import SubjectPseudonyms
from ufme_ray.config import LiveConfig, UfmeSettings
from ufme_ray.gallery.encryption import open_configured_storage
from ufme_ray.orchestration.audit_trail import AuditTrail
from ufme_ray.orchestration.demo import DemoLoader
from ufme_ray.orchestration.engine import Engine
from ufme_ray.serving.api.app import create_api
from ufme_ray.serving.api.dependencies import Services, install_services
from ufme_ray.serving.auth import KeyStore
from ufme_ray.serving.handles import GalleryHandle, StageHandles
from ufme_ray.serving.metrics import ServiceMetrics

api = create_api()


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, settings_json: str, detector, quality, liveness, morph, embedder, searcher):
        settings = UfmeSettings.model_validate_json(settings_json)
        gallery = GalleryHandle(searcher)
        metrics = ServiceMetrics()
        self._engine = Engine(settings, StageHandles(detector, quality, liveness, morph, embedder), gallery, metrics)
        install_services(
            Services(
                settings=settings,
                engine=self._engine,
                audit=AuditTrail(
                    open_configured_storage(settings), SubjectPseudonyms.from_settings(settings.audit), gallery.status
                ),
                keys=KeyStore(settings.auth),
                demo=DemoLoader(
                    lambda subject_id, data: self._engine.enrol(subject_id, data, operation="demo"),
                    default_folder=settings.demo_dir,
                    max_bytes=settings.image.max_bytes,
                ),
                metrics=metrics,
            )
        )

    def reconfigure(self, user_config: dict) -> None:
        """Thresholds and gate policy change live; an invalid config is refused whole."""
        self._engine.apply_live_config(LiveConfig.model_validate(user_config))
