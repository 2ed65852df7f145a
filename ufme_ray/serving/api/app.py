"""The FastAPI application: the routers, the operator console, the error handlers and the request metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    api.add_middleware(RequestMetrics)
    return api


class RequestMetrics:
    """Counts and times every request by route and status.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs each
    request in a task of its own behind a memory stream, work on the Gateway's one event loop for
    every request. An error that escapes the app counts as a 500, the answer the server then gives.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            services = installed_services()
            if services is not None:
                route = scope.get("route")  # set by the router on the scope it was given
                endpoint = f"{scope['method']} {route.path if route is not None else 'unmatched'}"
                services.metrics.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
                services.metrics.latency.observe((time.perf_counter() - started) * 1000, tags={"endpoint": endpoint})
