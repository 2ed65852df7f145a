"""The gateway's services as typed FastAPI dependencies; auth (key -> principal -> role) and the
audit wrapper, declared once per router."""

# No `from __future__ import annotations` here: `require` returns a closure that cloudpickle ships
# by value to the Serve replica with only the globals its code names, so string annotations
# could not be resolved there and FastAPI would take `request` for a query parameter.
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Awaitable, Callable, TypeVar

from fastapi import Depends, Request

from ufme_ray.audit import AuditRecord
from ufme_ray.config import UfmeSettings
from ufme_ray.orchestration.audit_trail import AuditTrail
from ufme_ray.orchestration.demo import DemoLoader
from ufme_ray.orchestration.engine import Engine
from ufme_ray.serving.api.errors import ApiError, status_for
from ufme_ray.serving.auth import AuthError, KeyStore, Principal, authorize
from ufme_ray.serving.metrics import ServiceMetrics

Result = TypeVar("Result")


@dataclass(frozen=True)
class Services:
    """What one gateway replica serves requests with."""

    settings: UfmeSettings
    engine: Engine
    audit: AuditTrail
    keys: KeyStore
    demo: DemoLoader
    metrics: ServiceMetrics


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


ServicesDep = Annotated[Services, Depends(get_services)]
EngineDep = Annotated[Engine, Depends(get_engine)]


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require(group: str) -> Callable:
    """A dependency: the caller's key must hold a role granted `group` (401 / 403 otherwise)."""

    async def check(request: Request, services: Services = Depends(get_services)) -> Principal:
        try:
            principal = services.keys.authenticate(presented_key(request))
            authorize(principal, group)
        except AuthError as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        request.state.principal = principal
        return principal

    return check


def request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given[:64] if given.isprintable() and given else uuid.uuid4().hex


async def audited(
    request: Request,
    services: Services,
    operation: str,
    action: Callable[[], Awaitable[Result]],
    *,
    subject_ids: list[str] | None = None,
    summarize: Callable[[Result], dict] | None = None,
) -> Result:
    """Run `action` and append its audit record — durable before the answer (or the error) leaves."""
    principal: Principal = request.state.principal
    record = {
        "request_id": request_id(request),
        "key_id": principal.key_id,
        "operation": operation,
        "subject_ids": list(subject_ids or []),
        "thresholds": services.engine.thresholds.as_dict(),
        "client": request.client.host if request.client else None,
    }
    try:
        result = await action()
    except Exception as exc:
        status = status_for(exc)
        if status == 500:
            raise  # unexpected: the error handler logs it
        code = getattr(exc, "code", "refused")
        await services.audit.record(AuditRecord(time=time.time(), outcome=str(status), detail=code, **record))
        raise
    extra = summarize(result) if summarize is not None else {}
    record["subject_ids"] = sorted(set(record["subject_ids"]) | set(extra.pop("subject_ids", [])))
    # The status the route answers with (201 for an enrolment); FastAPI's default is 200.
    status = getattr(request.scope.get("route"), "status_code", None) or 200
    await services.audit.record(AuditRecord(time=time.time(), outcome=str(status), **record, **extra))
    return result
