"""The gateway's services as typed FastAPI dependencies, and auth (key -> principal -> role),
declared once per router."""

# No `from __future__ import annotations` here: `require` returns a closure that cloudpickle ships
# by value to the Serve replica with only the globals its code names, so string annotations
# could not be resolved there and FastAPI would take `request` for a query parameter.
from dataclasses import dataclass
from typing import Annotated, Callable

from fastapi import Depends, Request

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.storage import ObjectStore
from ufme_ray.orchestration.audit_trail import AuditTrail
from ufme_ray.orchestration.demo import DemoLoader
from ufme_ray.orchestration.engine import Engine, Intake
from ufme_ray.orchestration.ratelimit import RateLimiter, retry_after_s
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.auth import AuthError, KeyStore, Principal, authorize, authorize_gallery
from ufme_ray.serving.metrics import ServiceMetrics

@dataclass(frozen=True)
class Services:
    """What one gateway replica serves requests with."""

    settings: UfmeSettings
    engine: Engine
    audit: AuditTrail
    keys: KeyStore
    demo: DemoLoader
    metrics: ServiceMetrics
    limiter: RateLimiter  # the keys' quotas; the Gateway's is the cluster's (serving.rate_limiter)
    store: ObjectStore | None = None  # the gallery's object storage (bulk import states and reports)


# Serve runs a deserialized copy of the FastAPI app, created after the Gateway's constructor, so
# the constructor cannot reach that app's state; a replica is one process, so it installs its
# services here instead.
_installed: Services | None = None


def install_services(services: Services) -> None:
    global _installed
    _installed = services


def installed_services() -> Services | None:
    return _installed


def get_services() -> Services:
    """The replica's services (see `install_services`); tests may override this dependency."""
    if _installed is None:
        raise ApiError(503, "not_ready", "the gateway is starting")
    return _installed


def get_engine(services: Annotated[Services, Depends(get_services)]) -> Engine:
    return services.engine


def get_store(services: Annotated[Services, Depends(get_services)]) -> ObjectStore:
    """The gallery's object storage (bulk imports, the last compaction); 503 if the gateway has none."""
    if services.store is None:
        raise ApiError(503, "not_ready", "the gateway has no storage configured")
    return services.store


ServicesDep = Annotated[Services, Depends(get_services)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require(group: str) -> Callable:
    """A dependency: the caller's key must hold a role granted `group` (401 / 403 otherwise) and be
    within its quota, if it has one (429 with Retry-After otherwise)."""

    async def check(request: Request, services: Services = Depends(get_services)) -> Principal:
        request.state.services = services  # the error handlers' audit uses what the request did
        try:
            principal = services.keys.authenticate(presented_key(request))
            request.state.principal = principal  # a 403 is audited under the key that asked
            authorize(principal, group)
        except AuthError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        if principal.rate is not None:
            # 0 also when the cluster's quota actor is unreachable: quotas fail open, auth does not
            # (serving.rate_limiter says why).
            wait_s = await services.limiter.wait_s(principal.key_id, principal.rate)
            if wait_s > 0:
                services.metrics.rate_limited.inc(tags={"key_id": principal.key_id})
                retry_after = retry_after_s(wait_s)
                raise ApiError(
                    429, "rate_limited",
                    f"the key {principal.key_id!r} is past its quota of {principal.rate.rate:g} requests/s "
                    f"(burst {principal.rate.burst}); retry after {retry_after} s",
                    headers={"Retry-After": str(retry_after)},
                )
        return principal

    return check


def allow_gallery(request: Request, gallery_id: str) -> Principal:
    """The request's principal (set by `require`) if its key may use the gallery; 403 otherwise."""
    principal = request.state.principal
    try:
        authorize_gallery(principal, gallery_id)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    return principal


def intake_for(request: Request, params) -> Intake:
    """How the request's photo arrived (the capture it declares, if its key may declare it; 403
    otherwise) and the quality filter it asks for."""
    try:
        capture = request.state.principal.capture(params.capture)
    except AuthError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    return Intake(capture, params.quality_filter)
