"""/api/v1/subjects: enrol a face, read a subject's templates, erase a subject (role: enrol)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from ufme_ray.orchestration.engine import Idempotency
from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, require
from ufme_ray.serving.api.inputs import read_image_request
from ufme_ray.serving.api.openapi import ERRORS, SubjectId, image_body

router = APIRouter(prefix="/api/v1/subjects", tags=["subjects"], responses=ERRORS, dependencies=[Depends(require("enrol"))])


def _enrol_summary(result: schemas.EnrolOut) -> dict:
    face = result.face
    return {
        "decisions": [
            {
                "status": "enrolled",
                "template_id": result.template_id,
                "quality": face.quality,
                "liveness": face.liveness,
                "duplicate_of": result.duplicate_of.subject_id if result.duplicate_of else None,
            }
        ]
    }


@router.post("/{subject_id}/faces", response_model=schemas.EnrolOut, status_code=201, openapi_extra=image_body(schemas.ImageIn))
async def enrol_face(
    subject_id: SubjectId,
    request: Request,
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
            description="Retry safely: a request repeated with the same key (from the same API key) enrols "
            "nothing again and answers with the first template. Reusing a key for another subject or image "
            "is refused (422 idempotency_key_reused). A key is forgotten when its subject is erased.",
        ),
    ] = None,
):
    """Enrol one face (exactly one dominant, whole face that passes the enrolment gates)."""
    _, images = await read_image_request(request, schemas.ImageIn, ("image",), services.settings.image)
    principal = request.state.principal
    idempotency = None if idempotency_key is None else Idempotency(principal.key_id, idempotency_key)

    async def enrol() -> schemas.EnrolOut:
        return presenters.enrolment_out(await services.engine.enrol(subject_id, images["image"], idempotency=idempotency))

    return await audited(request, services, "enrol", enrol, subject_ids=[subject_id], summarize=_enrol_summary)


@router.get("/{subject_id}", response_model=schemas.SubjectOut)
async def get_subject(subject_id: SubjectId, request: Request, services: ServicesDep):
    async def read() -> schemas.SubjectOut:
        return presenters.subject_out(await services.engine.subject(subject_id))

    return await audited(request, services, "read_subject", read, subject_ids=[subject_id])


@router.delete("/{subject_id}", response_model=schemas.ErasedOut)
async def erase_subject(subject_id: SubjectId, request: Request, services: ServicesDep):
    """Erase every template of the subject; it is never returned again."""

    async def erase() -> schemas.ErasedOut:
        return presenters.erasure_out(await services.engine.erase(subject_id))

    return await audited(
        request, services, "delete", erase, subject_ids=[subject_id],
        summarize=lambda r: {"decisions": [{"status": "erased", "template_ids": r.erased_template_ids}]},
    )
