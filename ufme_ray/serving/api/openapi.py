"""What every router documents the same way: error answers, image bodies, path and paging parameters."""

from __future__ import annotations

import copy
from typing import Annotated

from fastapi import Header, Path, Query
from pydantic import BaseModel

from ufme_ray.serving.api import schemas

SubjectId = Annotated[str, Path(pattern=schemas.SUBJECT_ID_PATTERN, description="Your identifier of the person.")]
GalleryId = Annotated[str, Path(pattern=schemas.GALLERY_ID_PATTERN, description="The gallery (watchlist, site, tenant).")]
# A list route's page: where it starts and how many items at most.
PageOffset = Annotated[int, Query(ge=0, le=1_000_000)]
PageLimit = Annotated[int, Query(ge=1, le=1000)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
        description="Retry safely: a request repeated with the same key (from the same API key) enrols "
        "nothing again and answers with the first template. Reusing a key for another subject, gallery or "
        "image is refused (422 idempotency_key_reused). A key is forgotten when its subject is erased.",
    ),
]

ERRORS = {
    400: {"model": schemas.ErrorOut, "description": "Bad image or body"},
    401: {"model": schemas.ErrorOut, "description": "No or unknown API key"},
    403: {"model": schemas.ErrorOut, "description": "The key's role may not call this"},
    404: {"model": schemas.ErrorOut, "description": "Unknown subject or gallery"},
    409: {"model": schemas.ErrorOut, "description": "The face is already enrolled under another subject; the gallery exists"},
    413: {"model": schemas.ErrorOut, "description": "Image too large"},
    415: {"model": schemas.ErrorOut, "description": "Unsupported image or media type"},
    422: {"model": schemas.ErrorOut, "description": "A gate or validation failed"},
    429: {"model": schemas.ErrorOut, "description": "The key's quota is spent; retry after Retry-After seconds"},
    503: {"model": schemas.ErrorOut, "description": "Gallery not ready; retry after Retry-After seconds"},
}

IMAGE_FIELDS = ("image", "image2")


def image_body(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of an image route: `model` as JSON (images base64) or as multipart
    (images as files). Inlined, because `read_image_request` parses the body itself, so FastAPI
    never puts these models in the components on its own."""
    as_json = model.model_json_schema()
    as_form = copy.deepcopy(as_json)
    for name in IMAGE_FIELDS:
        if name in as_json["properties"]:
            description = as_json["properties"][name]["description"]
            as_json["properties"][name] = {"type": "string", "format": "byte", "description": description}
            as_form["properties"][name] = {"type": "string", "format": "binary", "description": "An image file (JPEG, PNG, WebP or BMP)."}
    return {
        "requestBody": {
            "content": {"multipart/form-data": {"schema": as_form}, "application/json": {"schema": as_json}},
            "required": True,
        }
    }
