"""Auth (API key -> principal -> role check) and the audit wrapper, declared once per router."""

# No `from __future__ import annotations` here: `require` returns a closure that cloudpickle ships
# by value to the Serve replica with only the globals its code names, so string annotations
# could not be resolved there and FastAPI would take `request` for a query parameter.
import time
import uuid
from typing import Awaitable, Callable, TypeVar

from fastapi import Depends, Request

from ufme_ray.audit import AuditRecord
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.auth import AuthError, Principal, authorize
from ufme_ray.serving.searcher import GalleryUnavailableError
from ufme_ray.vision.errors import ImageError

Result = TypeVar("Result")


# Serve runs a deserialized copy of the FastAPI app, created after the Gateway's constructor, so
# the constructor cannot reach that app's state; a replica is one process, so it installs its
# Engine here instead.
_installed_engine = None


def install_engine(engine) -> None:
    global _installed_engine
    _installed_engine = engine


def current_engine():
    if _installed_engine is None:
        raise ApiError(503, "not_ready", "the gateway is starting")
    return _installed_engine


def get_engine():
    """The replica's Engine (see `install_engine`); tests may override this dependency."""
    return current_engine()


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require(group: str) -> Callable:
    """A dependency: the caller's key must hold a role granted `group` (401 / 403 otherwise)."""

    async def check(request: Request, engine=Depends(get_engine)) -> Principal:
        try:
            principal = engine.keys.authenticate(presented_key(request))
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
    engine,
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
        "thresholds": engine.thresholds.as_dict(),
        "client": request.client.host if request.client else None,
    }
    try:
        result = await action()
    except (ApiError, ImageError, GalleryUnavailableError) as exc:
        status = getattr(exc, "status", None) or getattr(exc, "http_status", None) or 503
        await engine.audit(AuditRecord(time=time.time(), outcome=str(status), detail=getattr(exc, "code", "not_ready"), **record))
        raise
    extra = summarize(result) if summarize is not None else {}
    record["subject_ids"] = sorted(set(record["subject_ids"]) | set(extra.pop("subject_ids", [])))
    await engine.audit(AuditRecord(time=time.time(), outcome="200", **record, **extra))
    return result
