"""Reading an image request: multipart file `image` or JSON `{"image": "<base64>"}` with limits."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartParser

from ufme_ray.config import ImageLimits
from ufme_ray.serving.api.errors import ApiError

Params = TypeVar("Params", bound=BaseModel)

# Room for the other form fields and multipart framing around a maximal image.
_ENVELOPE_BYTES = 64 * 1024


def _too_large(limits: ImageLimits) -> ApiError:
    return ApiError(413, "image_too_large", f"the request is larger than the image limit of {limits.max_bytes} bytes")


async def read_image_request(
    request: Request, model: type[Params], image_fields: tuple[str, ...], limits: ImageLimits
) -> tuple[Params, dict[str, bytes]]:
    """The validated parameters and the raw bytes of each present image field.

    Raises ApiError 413 (too large: from Content-Length before reading when given, else as soon
    as the streamed body passes the bound), 415 (neither multipart nor JSON), 400 (bad base64 /
    JSON / multipart), 422 (parameter validation).
    """
    max_request = (limits.max_bytes * 4 // 3 + 4) * len(image_fields) + _ENVELOPE_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_request:
        raise _too_large(limits)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("multipart/form-data", "application/json", ""):
        raise ApiError(415, "unsupported_media_type", f"send multipart/form-data or application/json, not {content_type!r}")
    # Counted while it streams, whatever Content-Length claims (a chunked body declares none):
    # `request.form()` would spool a whole multipart body to disk before any limit could apply.
    body = await _bounded_body(request, max_request, limits)
    if content_type == "multipart/form-data":
        return await _multipart(request, body, model, image_fields, limits)
    return _json(body, model, image_fields, limits)


async def _bounded_body(request: Request, max_request: int, limits: ImageLimits) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_request:
            raise _too_large(limits)
        chunks.append(chunk)
    return b"".join(chunks)


def _validate(model: type[Params], values: dict) -> Params:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _json(body: bytes, model: type[Params], image_fields, limits: ImageLimits) -> tuple[Params, dict[str, bytes]]:
    try:
        values = json.loads(body) if body else None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_json", "the body is not valid JSON: it is nested too deeply") from None
    if not isinstance(values, dict):
        raise ApiError(422, "invalid_request", "the JSON body must be an object with an 'image' field")
    params = _validate(model, values)
    images = {}
    for field in image_fields:
        encoded = getattr(params, field, None)
        if encoded is None:
            continue
        if len(encoded) > limits.max_bytes * 4 // 3 + 4:
            raise _too_large(limits)
        try:
            images[field] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "bad_base64", f"field {field!r} is not valid base64") from None
    return params, images


async def _multipart(request: Request, body: bytes, model: type[Params], image_fields, limits: ImageLimits):
    async def replay() -> AsyncIterator[bytes]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=len(image_fields), max_fields=16)
    try:
        form = await parser.parse()
    except Exception as exc:  # malformed multipart bodies raise parser-specific errors
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed: {exc}") from None
    try:
        return await _read_form(form, model, image_fields, limits)
    finally:
        await form.close()  # the request does not own this form: its spooled files are ours to close


async def _read_form(form: FormData, model: type[Params], image_fields, limits: ImageLimits):
    images, values = {}, {}
    for key, value in form.multi_items():
        if key in image_fields:
            if not isinstance(value, UploadFile):
                raise ApiError(422, "invalid_request", f"field {key!r} must be a file upload")
            data = await value.read(limits.max_bytes + 1)
            if len(data) > limits.max_bytes:
                raise _too_large(limits)
            images[key] = data
        elif isinstance(value, UploadFile):
            raise ApiError(422, "invalid_request", f"unexpected file field {key!r}")
        else:
            values[key] = value
    # The JSON model validates the non-file fields; its image fields are satisfied by the uploads.
    params = _validate(model, {**values, **{field: "" for field in images}})
    return params, images
