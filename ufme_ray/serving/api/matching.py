"""/api/v1 identify (1:N), verify (1:1) and analyze (role: search)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, require
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.api.inputs import read_image_request
from ufme_ray.serving.api.openapi import ERRORS, image_body

router = APIRouter(prefix="/api/v1", tags=["matching"], responses=ERRORS, dependencies=[Depends(require("search"))])


def _identify_summary(result: schemas.IdentifyOut) -> dict:
    return {
        "subject_ids": [f.decision.subject_id for f in result.faces if f.decision.subject_id],
        "decisions": [
            {"status": f.decision.status, "subject_id": f.decision.subject_id, "score": f.decision.score, "reason": f.decision.reason}
            for f in result.faces
        ],
    }


@router.post("/identify", response_model=schemas.IdentifyOut, openapi_extra=image_body(schemas.IdentifyIn))
async def identify(request: Request, services: ServicesDep):
    """1:N: candidates for every face in the image and a match / unknown / rejected decision."""
    params, images = await read_image_request(request, schemas.IdentifyIn, ("image",), services.settings.image)

    async def search() -> schemas.IdentifyOut:
        return presenters.identification_out(await services.engine.identify(images["image"], params.top_k))

    return await audited(request, services, "identify", search, summarize=_identify_summary)


@router.post("/verify", response_model=schemas.VerifyOut, openapi_extra=image_body(schemas.VerifyIn))
async def verify(request: Request, services: ServicesDep):
    """1:1: the image's main face against a subject (best template) or against a second image."""
    params, images = await read_image_request(request, schemas.VerifyIn, ("image", "image2"), services.settings.image)
    if (params.subject_id is None) == ("image2" not in images):
        raise ApiError(422, "invalid_request", "give exactly one of subject_id and image2")
    engine = services.engine

    async def compare() -> schemas.VerifyOut:
        if params.subject_id is not None:
            result = await engine.verify_subject(images["image"], params.subject_id)
        else:
            result = await engine.verify_images(images["image"], images["image2"])
        return presenters.verification_out(result)

    return await audited(
        request, services, "verify", compare, subject_ids=[params.subject_id] if params.subject_id else [],
        summarize=lambda r: {"decisions": [{"match": r.match, "similarity": r.similarity, "template_id": r.template_id}]},
    )


@router.post("/analyze", response_model=schemas.AnalyzeOut, openapi_extra=image_body(schemas.ImageIn))
async def analyze(request: Request, services: ServicesDep):
    """Every face with box, landmarks, quality, liveness and morph status; no search."""
    _, images = await read_image_request(request, schemas.ImageIn, ("image",), services.settings.image)

    async def analyze() -> schemas.AnalyzeOut:
        return presenters.analysis_out(await services.engine.analyze(images["image"]))

    return await audited(
        request, services, "analyze", analyze,
        summarize=lambda r: {"decisions": [{"faces": len(r.faces)}]},
    )
