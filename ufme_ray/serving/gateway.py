"""The Gateway deployment: the FastAPI ingress. Assembles the routers; the Engine does the work."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from ray import serve

from ufme_ray import __version__
from ufme_ray.config import LiveConfig, UfmeSettings
from ufme_ray.serving.api.errors import ApiError, install_error_handlers
from ufme_ray.serving.api.dependencies import current_engine, install_engine
from ufme_ray.serving.api.routes import admin, health, matching, subjects
from ufme_ray.serving.engine import Engine, StageHandles
from ufme_ray.serving.metrics import ServiceMetrics


def create_api() -> FastAPI:
    api = FastAPI(
        title="UFME-Ray",
        version=__version__,
        description="Face matching: enrol, identify (1:N), verify (1:1), erase. Every answer names the "
        "gates it applied, with scores and thresholds.",
    )
    for router in (subjects, matching, admin, health):
        api.include_router(router)
    install_error_handlers(api)

    @api.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        try:
            engine = current_engine()
        except ApiError:
            engine = None
        if engine is not None:
            endpoint = f"{request.method} {route.path if route is not None else 'unmatched'}"
            engine.metrics.requests.inc(tags={"endpoint": endpoint, "status": str(response.status_code)})
            engine.metrics.latency.observe((time.perf_counter() - started) * 1000, tags={"endpoint": endpoint})
        return response

    return api


api = create_api()


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(self, settings_json: str, detector, quality, liveness, morph, embedder, searcher):
        settings = UfmeSettings.model_validate_json(settings_json)
        handles = StageHandles(detector, quality, liveness, morph, embedder, searcher)
        self._engine = Engine(settings, handles, ServiceMetrics())
        install_engine(self._engine)

    def reconfigure(self, user_config: dict) -> None:
        """Thresholds and gate policy change live; an invalid config is refused whole."""
        self._engine.apply_live_config(LiveConfig.model_validate(user_config))
