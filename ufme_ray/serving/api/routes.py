"""The /api/v1 routers (one per resource), /health and /ready. Handlers only parse and delegate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse

from ufme_ray.serving.api import schemas
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.api.inputs import read_image_request


# Serve runs a deserialized copy of the FastAPI app, created after the Gateway's constructor, so
# the constructor cannot reach that app's state; a replica is one process, so it installs its
# Engine here instead.
_installed_engine = None


def install_engine(engine) -> None:
    global _installed_engine
    _installed_engine = engine


def get_engine():
    """The replica's Engine; tests may override this dependency."""
    if _installed_engine is None:
        raise ApiError(503, "not_ready", "the gateway is starting")
    return _installed_engine


EngineDep = Annotated[object, Depends(get_engine)]
SubjectId = Annotated[str, Path(pattern=schemas.SUBJECT_ID_PATTERN, description="Your identifier of the person.")]

ERRORS = {
    400: {"model": schemas.ErrorOut, "description": "Bad image or body"},
    404: {"model": schemas.ErrorOut, "description": "Unknown subject"},
    413: {"model": schemas.ErrorOut, "description": "Image too large"},
    415: {"model": schemas.ErrorOut, "description": "Unsupported image or media type"},
    422: {"model": schemas.ErrorOut, "description": "A gate or validation failed"},
    503: {"model": schemas.ErrorOut, "description": "Gallery not ready; retry after Retry-After seconds"},
}

IMAGE_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}, "required": ["image"]}
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/ImageIn"}},
        },
        "required": True,
    }
}

subjects = APIRouter(prefix="/api/v1/subjects", tags=["subjects"], responses=ERRORS)
matching = APIRouter(prefix="/api/v1", tags=["matching"], responses=ERRORS)
gallery = APIRouter(prefix="/api/v1", tags=["gallery"], responses=ERRORS)
health = APIRouter(tags=["health"])


@subjects.post("/{subject_id}/faces", response_model=schemas.EnrolOut, status_code=201, openapi_extra=IMAGE_BODY)
async def enrol_face(subject_id: SubjectId, request: Request, engine: EngineDep):
    """Enrol one face (exactly one dominant face that passes the enrolment gates)."""
    _, images = await read_image_request(request, schemas.ImageIn, ("image",), engine.settings.image)
    return await engine.enrol(subject_id, images["image"])


@subjects.get("/{subject_id}", response_model=schemas.SubjectOut)
async def get_subject(subject_id: SubjectId, engine: EngineDep):
    return await engine.subject(subject_id)


@subjects.delete("/{subject_id}", response_model=schemas.ErasedOut)
async def erase_subject(subject_id: SubjectId, engine: EngineDep):
    """Erase every template of the subject; it is never returned again."""
    return await engine.erase(subject_id)


@matching.post("/identify", response_model=schemas.IdentifyOut, openapi_extra=IMAGE_BODY)
async def identify(request: Request, engine: EngineDep):
    """1:N: candidates for every face in the image and a match / unknown / rejected decision."""
    params, images = await read_image_request(request, schemas.IdentifyIn, ("image",), engine.settings.image)
    return await engine.identify(images["image"], params.top_k)


@matching.post("/verify", response_model=schemas.VerifyOut, openapi_extra=IMAGE_BODY)
async def verify(request: Request, engine: EngineDep):
    """1:1: the image's main face against a subject (best template) or against a second image."""
    params, images = await read_image_request(request, schemas.VerifyIn, ("image", "image2"), engine.settings.image)
    if (params.subject_id is None) == ("image2" not in images):
        raise ApiError(422, "invalid_request", "give exactly one of subject_id and image2")
    if params.subject_id is not None:
        return await engine.verify_subject(images["image"], params.subject_id)
    return await engine.verify_images(images["image"], images["image2"])


@matching.post("/analyze", response_model=schemas.AnalyzeOut, openapi_extra=IMAGE_BODY)
async def analyze(request: Request, engine: EngineDep):
    """Every face with box, landmarks, quality, liveness and morph status; no search."""
    _, images = await read_image_request(request, schemas.ImageIn, ("image",), engine.settings.image)
    return await engine.analyze_out(images["image"])


@gallery.get("/gallery", response_model=schemas.GalleryOut)
async def gallery_status(engine: EngineDep):
    return await engine.gallery()


@gallery.post("/demo/load", response_model=schemas.DemoLoadOut)
async def demo_load(engine: EngineDep, body: schemas.DemoLoadIn | None = None):
    """Enrol a demo gallery from a folder of <subject>/<image> photos on the gateway's machine."""
    return await engine.demo_load(body or schemas.DemoLoadIn())


@health.get("/health")
async def liveness_probe():
    """The process is up (liveness probe)."""
    return {"status": "ok"}


@health.get("/ready", response_model=schemas.ReadyOut, responses={503: {"model": schemas.ReadyOut}})
async def readiness_probe(engine: EngineDep):
    """All shards restored and every stage answering (readiness probe); 503 until then."""
    ready = await engine.ready()
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)
