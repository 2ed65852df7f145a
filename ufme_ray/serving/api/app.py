"""The FastAPI application: the routers, the operator console, the error handlers and the request metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request

from ufme_ray import __version__
from ufme_ray.serving.api import admin, galleries, health, imports, keys, matching, subjects
from ufme_ray.serving.api.auditing import audit_refusal
from ufme_ray.serving.api.console import install_console
from ufme_ray.serving.api.dependencies import installed_services
from ufme_ray.serving.api.errors import install_error_handlers


def create_api() -> FastAPI:
    api = FastAPI(
        title="UFME-Ray",
        version=__version__,
        description="Face matching: enrol, identify (1:N), verify (1:1), erase. Every answer names the "
        "gates it applied, with scores and thresholds.",
    )
    for module in (subjects, matching, galleries, imports, admin, keys, health):
        api.include_router(module.router)
    install_console(api)
    install_error_handlers(api, audit_refusal)

    @api.middleware("http")
    async def _measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        services = installed_services()
        if services is not None:
            route = request.scope.get("route")
            endpoint = f"{request.method} {route.path if route is not None else 'unmatched'}"
            services.metrics.requests.inc(tags={"endpoint": endpoint, "status": str(response.status_code)})
            services.metrics.latency.observe((time.perf_counter() - started) * 1000, tags={"endpoint": endpoint})
        return response

    return api
