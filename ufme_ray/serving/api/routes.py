"""The /api/v1 routers (one per resource, each with its role), /health and /ready.

Handlers parse, check the caller's role (router dependency), delegate to the Engine and audit.
"""

from __future__ import annotations

import copy
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ufme_ray.serving.api import schemas
from ufme_ray.serving.api.dependencies import audited, get_engine, require
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.api.inputs import read_image_request

EngineDep = Annotated[object, Depends(get_engine)]
# 9999-12-31T23:59:59Z, the last second a datetime holds: later times (and inf, nan) are refused
# with 422 instead of failing the audit reader with 500.
LATEST_TIME_S = 253_402_300_799.0
SubjectId = Annotated[str, Path(pattern=schemas.SUBJECT_ID_PATTERN, description="Your identifier of the person.")]

ERRORS = {
    400: {"model": schemas.ErrorOut, "description": "Bad image or body"},
    401: {"model": schemas.ErrorOut, "description": "No or unknown API key"},
    403: {"model": schemas.ErrorOut, "description": "The key's role may not call this"},
    404: {"model": schemas.ErrorOut, "description": "Unknown subject"},
    409: {"model": schemas.ErrorOut, "description": "The face is already enrolled under another subject"},
    413: {"model": schemas.ErrorOut, "description": "Image too large"},
    415: {"model": schemas.ErrorOut, "description": "Unsupported image or media type"},
    422: {"model": schemas.ErrorOut, "description": "A gate or validation failed"},
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


subjects = APIRouter(prefix="/api/v1/subjects", tags=["subjects"], responses=ERRORS, dependencies=[Depends(require("enrol"))])
matching = APIRouter(prefix="/api/v1", tags=["matching"], responses=ERRORS, dependencies=[Depends(require("search"))])
admin = APIRouter(prefix="/api/v1", tags=["admin"], responses=ERRORS, dependencies=[Depends(require("admin"))])
health = APIRouter(tags=["health"])


def _identify_summary(result: schemas.IdentifyOut) -> dict:
    return {
        "subject_ids": [f.decision.subject_id for f in result.faces if f.decision.subject_id],
        "decisions": [
            {"status": f.decision.status, "subject_id": f.decision.subject_id, "score": f.decision.score, "reason": f.decision.reason}
            for f in result.faces
        ],
    }


@subjects.post("/{subject_id}/faces", response_model=schemas.EnrolOut, status_code=201, openapi_extra=image_body(schemas.ImageIn))
async def enrol_face(subject_id: SubjectId, request: Request, engine: EngineDep):
    """Enrol one face (exactly one dominant, whole face that passes the enrolment gates)."""
    _, images = await read_image_request(request, schemas.ImageIn, ("image",), engine.settings.image)
    return await audited(
        request, engine, "enrol", lambda: engine.enrol(subject_id, images["image"]), subject_ids=[subject_id],
        summarize=lambda r: {"decisions": [{"status": "enrolled", "template_id": r.template_id, "quality": r.face.quality,
                                            "liveness": r.face.liveness,
                                            "duplicate_of": r.duplicate_of.subject_id if r.duplicate_of else None}]},
    )


@subjects.get("/{subject_id}", response_model=schemas.SubjectOut)
async def get_subject(subject_id: SubjectId, request: Request, engine: EngineDep):
    return await audited(request, engine, "read_subject", lambda: engine.subject(subject_id), subject_ids=[subject_id])


@subjects.delete("/{subject_id}", response_model=schemas.ErasedOut)
async def erase_subject(subject_id: SubjectId, request: Request, engine: EngineDep):
    """Erase every template of the subject; it is never returned again."""
    return await audited(
        request, engine, "delete", lambda: engine.erase(subject_id), subject_ids=[subject_id],
        summarize=lambda r: {"decisions": [{"status": "erased", "template_ids": r.erased_template_ids}]},
    )


@matching.post("/identify", response_model=schemas.IdentifyOut, openapi_extra=image_body(schemas.IdentifyIn))
async def identify(request: Request, engine: EngineDep):
    """1:N: candidates for every face in the image and a match / unknown / rejected decision."""
    params, images = await read_image_request(request, schemas.IdentifyIn, ("image",), engine.settings.image)
    return await audited(request, engine, "identify", lambda: engine.identify(images["image"], params.top_k), summarize=_identify_summary)


@matching.post("/verify", response_model=schemas.VerifyOut, openapi_extra=image_body(schemas.VerifyIn))
async def verify(request: Request, engine: EngineDep):
    """1:1: the image's main face against a subject (best template) or against a second image."""
    params, images = await read_image_request(request, schemas.VerifyIn, ("image", "image2"), engine.settings.image)
    if (params.subject_id is None) == ("image2" not in images):
        raise ApiError(422, "invalid_request", "give exactly one of subject_id and image2")
    if params.subject_id is not None:
        action = lambda: engine.verify_subject(images["image"], params.subject_id)  # noqa: E731
    else:
        action = lambda: engine.verify_images(images["image"], images["image2"])  # noqa: E731
    return await audited(
        request, engine, "verify", action, subject_ids=[params.subject_id] if params.subject_id else [],
        summarize=lambda r: {"decisions": [{"match": r.match, "similarity": r.similarity, "template_id": r.template_id}]},
    )


@matching.post("/analyze", response_model=schemas.AnalyzeOut, openapi_extra=image_body(schemas.ImageIn))
async def analyze(request: Request, engine: EngineDep):
    """Every face with box, landmarks, quality, liveness and morph status; no search."""
    _, images = await read_image_request(request, schemas.ImageIn, ("image",), engine.settings.image)
    return await engine.analyze_out(images["image"])


@admin.get("/gallery", response_model=schemas.GalleryOut)
async def gallery_status(engine: EngineDep):
    return await engine.gallery()


@admin.post("/demo/load", response_model=schemas.DemoLoadOut)
async def demo_load(request: Request, engine: EngineDep, body: schemas.DemoLoadIn | None = None):
    """Enrol a demo gallery from a folder of <subject>/<image> photos on the gateway's machine."""
    load = body or schemas.DemoLoadIn()
    return await audited(
        request, engine, "demo_load", lambda: engine.demo_load(load), subject_ids=load.subjects or [],
        summarize=lambda r: {"decisions": [{"subjects_enrolled": r.subjects_enrolled, "skipped": len(r.skipped)}]},
    )


@admin.get("/audit", response_model=schemas.AuditPageOut)
async def audit_trail(
    engine: EngineDep,
    since: Annotated[float | None, Query(ge=0, le=LATEST_TIME_S, description="Unix time (s), inclusive.")] = None,
    until: Annotated[float | None, Query(ge=0, le=LATEST_TIME_S, description="Unix time (s), inclusive.")] = None,
    operation: Annotated[str | None, Query()] = None,
    subject_id: Annotated[str | None, Query()] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
):
    """Audit records, oldest first (admin only)."""
    return await engine.audit_page(since=since, until=until, operation=operation, subject_id=subject_id, offset=offset, limit=limit)


@health.get("/health")
async def liveness_probe():
    """The process is up (liveness probe)."""
    return {"status": "ok"}


@health.get("/ready", response_model=schemas.ReadyOut, responses={503: {"model": schemas.ReadyOut}})
async def readiness_probe(engine: EngineDep):
    """All shards restored and every stage answering (readiness probe); 503 until then."""
    ready = await engine.ready()
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)
