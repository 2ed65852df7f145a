"""Every error leaves as JSON {"error": {"code", "message"}} with the status that names its cause.

The only place that maps the domain's refusals (orchestration, vision, auth) to HTTP statuses.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ufme_ray.orchestration import errors as domain
from ufme_ray.serving.api.presenters import face_out
from ufme_ray.serving.auth import AuthError
from ufme_ray.vision import errors as vision
from ufme_ray.vision.pipeline import NoFaceError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5

# Most specific class first: the first match decides.
STATUS = (
    (domain.GateRejectedError, 422),
    (domain.DuplicateFaceError, 409),
    (domain.UnknownSubjectError, 404),
    (domain.UnknownGalleryError, 404),
    (domain.GalleryConflictError, 409),
    (domain.IdempotencyKeyReusedError, 422),
    (domain.FaceNotFoundError, 422),
    (domain.QualityFilterUnavailableError, 422),
    (domain.GalleryUnavailableError, 503),
    (domain.AuditUnavailableError, 503),
    (domain.DomainError, 422),
    (NoFaceError, 422),
    (vision.UnsupportedImageError, 415),
    (vision.ImageTooLargeError, 413),
    # 400 like corrupt_image: the image's own bytes are damaged; 422 is for sound images refused by policy.
    (vision.BadExifError, 400),
    (vision.ImageError, 400),
)


class ApiError(Exception):
    """A refusal of the request itself (its encoding, size or fields), raised by the HTTP layer."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers  # e.g. Retry-After with a 429


def status_for(exc: BaseException) -> int:
    """The HTTP status an exception leaves as; 500 for anything unexpected."""
    if isinstance(exc, (ApiError, AuthError)):
        return exc.status
    return next((status for cls, status in STATUS if isinstance(exc, cls)), 500)


def error_response(status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI, on_error: Callable[[Request, int, str], Awaitable[None]]) -> None:
    """Install the handlers; each calls `on_error(request, status, code)` before it answers (the audit)."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        await on_error(request, exc.status, exc.code)
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(domain.DomainError)
    async def _domain(request: Request, exc: domain.DomainError):
        status = status_for(exc)
        await on_error(request, status, exc.code)
        details = exc.details
        if isinstance(exc, domain.GateRejectedError):
            details = {"face": face_out(exc.face, exc.enforced, exc.capture).model_dump(), "failed_gates": exc.failed}
        # A refusal raised in another replica arrives wrapped by Ray, whose str() is a traceback:
        # the message attribute is the cause's own.
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
        return error_response(status, exc.code, exc.message, details, headers)

    @app.exception_handler(vision.ImageError)
    async def _image(request: Request, exc: vision.ImageError):
        await on_error(request, status_for(exc), exc.code)
        return error_response(status_for(exc), exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        await on_error(request, 422, "invalid_request")
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return error_response(422, "invalid_request", summary, {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
        code = codes.get(exc.status_code, "http_error")
        await on_error(request, exc.status_code, code)
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unhandled error")
        await on_error(request, 500, "internal_error")
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")
