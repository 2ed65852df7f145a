"""Every error leaves as JSON {"error": {"code", "message"}} with the status that names its cause."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ufme_ray.serving.searcher import GalleryUnavailableError
from ufme_ray.vision.errors import ImageError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ApiError(Exception):
    """A refusal with a stable code; raised by the engine and the routers."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def not_found(subject_id: str) -> ApiError:
    return ApiError(404, "unknown_subject", f"subject {subject_id!r} is not enrolled")


def error_response(status: int, code: str, message: str, details: dict | None = None, headers: dict | None = None):
    body = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(ImageError)
    async def _image(_: Request, exc: ImageError):
        return error_response(exc.http_status, exc.code, exc.message)

    @app.exception_handler(GalleryUnavailableError)
    async def _unavailable(_: Request, exc: GalleryUnavailableError):
        return error_response(503, "not_ready", str(exc), headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        problems = [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return error_response(422, "invalid_request", summary, {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        logger.exception("unhandled error")
        return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); see the server log")
