"""/api/v1 identify (1:N), verify (1:1) and analyze (role: search); identify and verify also
under /api/v1/galleries/{gallery_id}/."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ufme_ray.gallery.galleries import DEFAULT_GALLERY
from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, allow_gallery, intake_for, require
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.api.inputs import read_image_request
from ufme_ray.serving.api.openapi import ERRORS, GalleryId, image_body

router = APIRouter(prefix="/api/v1", tags=["matching"], responses=ERRORS, dependencies=[Depends(require("search"))])


def _identify_summary(result: schemas.IdentifyOut) -> dict:
    return {
        "subject_ids": [f.decision.subject_id for f in result.faces if f.decision.subject_id],
        "decisions": [
            {
                "status": f.decision.status, "gallery_id": f.decision.gallery_id, "subject_id": f.decision.subject_id,
                "score": f.decision.score, "reason": f.decision.reason,
            }
            for f in result.faces
        ],
    }


async def _identify(path_gallery: str | None, request: Request, services):
    params, images = await read_image_request(request, schemas.IdentifyIn, ("image",), services.settings.image)
    if path_gallery is not None and params.galleries not in (None, [path_gallery]):
        raise ApiError(422, "invalid_request", "the path names the gallery: leave `galleries` out")
    galleries = params.galleries or [path_gallery or DEFAULT_GALLERY]
    for gallery_id in galleries:
        allow_gallery(request, gallery_id)
    intake = intake_for(request, params)

    async def search() -> schemas.IdentifyOut:
        result = await services.engine.identify(images["image"], params.top_k, galleries=galleries, intake=intake)
        return presenters.identification_out(result)

    return await audited(request, services, "identify", search, galleries=galleries, summarize=_identify_summary)


async def _verify(gallery_id: str, request: Request, services):
    allow_gallery(request, gallery_id)
    params, images = await read_image_request(request, schemas.VerifyIn, ("image", "image2"), services.settings.image)
    if (params.subject_id is None) == ("image2" not in images):
        raise ApiError(422, "invalid_request", "give exactly one of subject_id and image2")
    intake = intake_for(request, params)
    engine = services.engine

    async def compare() -> schemas.VerifyOut:
        if params.subject_id is not None:
            result = await engine.verify_subject(images["image"], params.subject_id, gallery_id=gallery_id, intake=intake)
        else:
            result = await engine.verify_images(images["image"], images["image2"], intake=intake)
        return presenters.verification_out(result)

    return await audited(
        request, services, "verify", compare, subject_ids=[params.subject_id] if params.subject_id else [],
        galleries=[gallery_id] if params.subject_id else [],
        summarize=lambda r: {"decisions": [{"match": r.match, "similarity": r.similarity, "template_id": r.template_id}]},
    )


IDENTIFY = {"response_model": schemas.IdentifyOut, "openapi_extra": image_body(schemas.IdentifyIn)}
VERIFY = {"response_model": schemas.VerifyOut, "openapi_extra": image_body(schemas.VerifyIn)}


@router.post("/identify", **IDENTIFY)
async def identify(request: Request, services: ServicesDep):
    """1:N: candidates for every face in the image and a match / unknown / rejected decision, in
    `default` or the `galleries` given (each candidate names its gallery)."""
    return await _identify(None, request, services)


@router.post("/galleries/{gallery_id}/identify", **IDENTIFY)
async def identify_in_gallery(gallery_id: GalleryId, request: Request, services: ServicesDep):
    """1:N within the gallery."""
    return await _identify(gallery_id, request, services)


@router.post("/verify", **VERIFY)
async def verify(request: Request, services: ServicesDep):
    """1:1: the image's main face against a subject of `default` (best template) or against a second image."""
    return await _verify(DEFAULT_GALLERY, request, services)


@router.post("/galleries/{gallery_id}/verify", **VERIFY)
async def verify_in_gallery(gallery_id: GalleryId, request: Request, services: ServicesDep):
    """1:1 against a subject of the gallery, or against a second image."""
    return await _verify(gallery_id, request, services)


@router.post("/analyze", response_model=schemas.AnalyzeOut, openapi_extra=image_body(schemas.ImageIn))
async def analyze(request: Request, services: ServicesDep):
    """Every face with box, landmarks, quality, liveness and morph status; no search."""
    params, images = await read_image_request(request, schemas.ImageIn, ("image",), services.settings.image)
    intake = intake_for(request, params)

    async def analyze() -> schemas.AnalyzeOut:
        return presenters.analysis_out(await services.engine.analyze(images["image"], intake=intake))

    return await audited(
        request, services, "analyze", analyze,
        summarize=lambda r: {"decisions": [{"faces": len(r.faces)}]},
    )
