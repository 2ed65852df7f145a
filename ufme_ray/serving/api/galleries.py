"""/api/v1/galleries: create, list, read, change and delete galleries (role: admin).

A gallery's subjects and searches are under /api/v1/galleries/{gallery_id}/subjects, /identify and
/verify (subjects.py, matching.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, allow_gallery, require
from ufme_ray.serving.api.openapi import ERRORS, GalleryId, PageLimit, PageOffset

router = APIRouter(prefix="/api/v1/galleries", tags=["galleries"], responses=ERRORS, dependencies=[Depends(require("admin"))])


@router.post("", response_model=schemas.GalleryInfoOut, status_code=201)
async def create_gallery(body: schemas.GalleryIn, request: Request, services: ServicesDep):
    """Create a gallery (409 gallery_exists; 409 too_many_galleries past `gallery.max_galleries`)."""
    allow_gallery(request, body.gallery_id)

    async def create() -> schemas.GalleryInfoOut:
        info = await services.engine.create_gallery(body.gallery_id, body.description, body.policy)
        return presenters.gallery_info_out(info)

    return await audited(request, services, "gallery_create", create, galleries=[body.gallery_id])


@router.get("", response_model=schemas.GalleryListOut)
async def list_galleries(
    request: Request,
    services: ServicesDep,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
):
    """The galleries, by id, a page at a time (those the key may use)."""
    principal = request.state.principal

    async def page() -> schemas.GalleryListOut:
        records, _ = await services.engine.list_galleries(0, 1_000_000)
        visible = [r for r in records if principal.may_use(r.gallery_id)]
        return presenters.gallery_list_out(visible[offset : offset + limit], len(visible), offset, limit)

    return await audited(request, services, "gallery_list", page)


@router.get("/{gallery_id}", response_model=schemas.GalleryInfoOut)
async def get_gallery(gallery_id: GalleryId, request: Request, services: ServicesDep):
    """Subjects, templates and per-shard counts, snapshot epochs, and the thresholds and gates in force."""
    allow_gallery(request, gallery_id)

    async def read() -> schemas.GalleryInfoOut:
        return presenters.gallery_info_out(await services.engine.gallery_info(gallery_id))

    return await audited(request, services, "gallery_show", read, galleries=[gallery_id])


@router.patch("/{gallery_id}", response_model=schemas.GalleryInfoOut)
async def update_gallery(gallery_id: GalleryId, body: schemas.GalleryPatchIn, request: Request, services: ServicesDep):
    """Change the description or the policy (thresholds, gates, duplicates); durable, and live on every
    Gateway replica within seconds, without a restart."""
    allow_gallery(request, gallery_id)

    async def update() -> schemas.GalleryInfoOut:
        info = await services.engine.update_gallery(gallery_id, description=body.description, policy=body.policy)
        return presenters.gallery_info_out(info)

    return await audited(request, services, "gallery_update", update, galleries=[gallery_id])


@router.delete("/{gallery_id}", response_model=schemas.GalleryErasedOut)
async def delete_gallery(gallery_id: GalleryId, request: Request, services: ServicesDep):
    """Erase every subject of the gallery and the gallery itself. A delete cut short (503) is
    finished by sending it again; the next compaction removes the templates from storage."""
    allow_gallery(request, gallery_id)

    async def delete() -> schemas.GalleryErasedOut:
        deleted = await services.engine.delete_gallery(gallery_id)
        return schemas.GalleryErasedOut(gallery_id=deleted.gallery_id, templates_erased=deleted.templates_erased)

    return await audited(
        request, services, "gallery_delete", delete, galleries=[gallery_id],
        summarize=lambda r: {"decisions": [{"status": "erased", "templates": r.templates_erased}]},
    )
