"""Subjects of a gallery: enrol a face, read a subject's templates, erase a subject, list the
subjects (role: enrol). Each route exists under /api/v1/galleries/{gallery_id}/subjects and, for
the gallery `default`, under /api/v1/subjects as before galleries existed."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ufme_ray.gallery.galleries import DEFAULT_GALLERY
from ufme_ray.orchestration.engine import Idempotency
from ufme_ray.orchestration.errors import DuplicateFaceError
from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, allow_gallery, intake_for, require
from ufme_ray.serving.api.openapi import ERRORS, GalleryId, IdempotencyKey, PageLimit, PageOffset, SubjectId, image_body
from ufme_ray.serving.api.inputs import read_image_request
from ufme_ray.serving.auth import ROLE_GRANTS

router = APIRouter(prefix="/api/v1", tags=["subjects"], responses=ERRORS, dependencies=[Depends(require("enrol"))])
IN_GALLERY = "/galleries/{gallery_id}/subjects"


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


async def _enrol(gallery_id: str, subject_id: str, request: Request, services, idempotency_key: str | None):
    principal = allow_gallery(request, gallery_id)
    params, images = await read_image_request(request, schemas.EnrolIn, ("image",), services.settings.image)
    intake = intake_for(request, params)
    idempotency = None if idempotency_key is None else Idempotency(principal.key_id, idempotency_key)
    # Naming the subject a face already belongs to is a search: only for keys that may search here.
    may_search = principal.role in ROLE_GRANTS["search"] and principal.may_use(gallery_id)

    async def enrol() -> schemas.EnrolOut:
        try:
            enrolled = await services.engine.enrol(
                subject_id, images["image"], idempotency=idempotency, gallery_id=gallery_id, intake=intake, box=params.box
            )
        except DuplicateFaceError as exc:
            raise exc if may_search else exc.redacted() from None
        return presenters.enrolment_out(enrolled)

    return await audited(
        request, services, "enrol", enrol, subject_ids=[subject_id], galleries=[gallery_id], summarize=_enrol_summary
    )


async def _read(gallery_id: str, subject_id: str, request: Request, services):
    allow_gallery(request, gallery_id)

    async def read() -> schemas.SubjectOut:
        return presenters.subject_out(await services.engine.subject(subject_id, gallery_id=gallery_id))

    return await audited(request, services, "read_subject", read, subject_ids=[subject_id], galleries=[gallery_id])


async def _erase(gallery_id: str, subject_id: str, request: Request, services):
    allow_gallery(request, gallery_id)

    async def erase() -> schemas.ErasedOut:
        return presenters.erasure_out(await services.engine.erase(subject_id, gallery_id=gallery_id))

    return await audited(
        request, services, "delete", erase, subject_ids=[subject_id], galleries=[gallery_id],
        summarize=lambda r: {"decisions": [{"status": "erased", "template_ids": r.erased_template_ids}]},
    )


ENROL = {"response_model": schemas.EnrolOut, "status_code": 201, "openapi_extra": image_body(schemas.EnrolIn)}


@router.post("/subjects/{subject_id}/faces", **ENROL)
async def enrol_face(subject_id: SubjectId, request: Request, services: ServicesDep, idempotency_key: IdempotencyKey = None):
    """Enrol one face (exactly one dominant, whole face that passes the enrolment gates) in `default`."""
    return await _enrol(DEFAULT_GALLERY, subject_id, request, services, idempotency_key)


@router.post(IN_GALLERY + "/{subject_id}/faces", **ENROL)
async def enrol_face_in_gallery(
    gallery_id: GalleryId, subject_id: SubjectId, request: Request, services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
):
    """Enrol one face in the gallery; the duplicate check looks within it."""
    return await _enrol(gallery_id, subject_id, request, services, idempotency_key)


@router.get("/subjects/{subject_id}", response_model=schemas.SubjectOut)
async def get_subject(subject_id: SubjectId, request: Request, services: ServicesDep):
    return await _read(DEFAULT_GALLERY, subject_id, request, services)


@router.get(IN_GALLERY + "/{subject_id}", response_model=schemas.SubjectOut)
async def get_subject_in_gallery(gallery_id: GalleryId, subject_id: SubjectId, request: Request, services: ServicesDep):
    return await _read(gallery_id, subject_id, request, services)


@router.delete("/subjects/{subject_id}", response_model=schemas.ErasedOut)
async def erase_subject(subject_id: SubjectId, request: Request, services: ServicesDep):
    """Erase every template of the subject; it is never returned again."""
    return await _erase(DEFAULT_GALLERY, subject_id, request, services)


@router.delete(IN_GALLERY + "/{subject_id}", response_model=schemas.ErasedOut)
async def erase_subject_in_gallery(gallery_id: GalleryId, subject_id: SubjectId, request: Request, services: ServicesDep):
    """Erase every template of the gallery's subject; it is never returned again."""
    return await _erase(gallery_id, subject_id, request, services)


@router.get(IN_GALLERY, response_model=schemas.SubjectListOut)
async def list_subjects(
    gallery_id: GalleryId,
    request: Request,
    services: ServicesDep,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
):
    """The gallery's subject ids in order, a page at a time."""
    allow_gallery(request, gallery_id)

    async def page() -> schemas.SubjectListOut:
        return presenters.subject_list_out(await services.engine.subjects(gallery_id, offset, limit), offset, limit)

    return await audited(request, services, "list_subjects", page, galleries=[gallery_id])
