"""/api/v1 gallery status, the last compaction, the stages' execution providers, demo load and the
audit trail (role: admin)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from ufme_ray.orchestration.compactions import read_last_compaction
from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, StoreDep, allow_gallery, require
from ufme_ray.serving.api.openapi import ERRORS, PageLimit

router = APIRouter(prefix="/api/v1", tags=["admin"], responses=ERRORS, dependencies=[Depends(require("admin"))])

# 9999-12-31T23:59:59Z, the last second a datetime holds: later times (and inf, nan) are refused
# with 422 instead of failing the audit reader with 500.
LATEST_TIME_S = 253_402_300_799.0


@router.get("/gallery", response_model=schemas.GalleryOut)
async def gallery_status(request: Request, services: ServicesDep):
    async def read() -> schemas.GalleryOut:
        return presenters.gallery_out(await services.engine.gallery_state())

    return await audited(request, services, "gallery_read", read)


@router.get("/compaction", response_model=schemas.CompactionOut)
async def compaction_status(request: Request, services: ServicesDep, store: StoreDep):
    """The last compaction run: status, epoch, vectors in / out / dropped, shards swapped, retention."""

    async def read() -> schemas.CompactionOut:
        return schemas.CompactionOut(last=await asyncio.to_thread(read_last_compaction, store))

    return await audited(request, services, "compaction_read", read)


@router.get("/stages", response_model=schemas.StagesOut)
async def stage_sessions(request: Request, services: ServicesDep):
    """Per pipeline stage, the execution providers its model sessions got: the settings ask
    (`runtime.providers`), the machine decides, and a provider it lacks falls back to the next."""

    async def read() -> schemas.StagesOut:
        return schemas.StagesOut(stages=await services.engine.stages.sessions())

    return await audited(request, services, "stages_read", read)


@router.post("/demo/load", response_model=schemas.DemoLoadOut)
async def demo_load(request: Request, services: ServicesDep, body: schemas.DemoLoadIn | None = None):
    """Enrol a demo gallery from a folder of <subject>/<image> photos on the gateway's machine."""
    load = body or schemas.DemoLoadIn()
    allow_gallery(request, load.gallery_id)

    async def run() -> schemas.DemoLoadOut:
        await services.engine.galleries.record(load.gallery_id)  # an unknown gallery: 404, not a skip per photo
        report = await services.demo.load(
            load.folder, images_per_subject=load.images_per_subject, subjects=load.subjects, gallery_id=load.gallery_id
        )
        return presenters.demo_load_out(report)

    return await audited(
        request, services, "demo_load", run, subject_ids=load.subjects or [], galleries=[load.gallery_id],
        summarize=lambda r: {"decisions": [{"subjects_enrolled": r.subjects_enrolled, "skipped": len(r.skipped)}]},
    )


@router.get("/audit", response_model=schemas.AuditPageOut)
async def audit_trail(
    request: Request,
    services: ServicesDep,
    since: Annotated[float | None, Query(ge=0, le=LATEST_TIME_S, description="Unix time (s), inclusive.")] = None,
    until: Annotated[float | None, Query(ge=0, le=LATEST_TIME_S, description="Unix time (s), inclusive.")] = None,
    operation: Annotated[str | None, Query()] = None,
    subject_id: Annotated[str | None, Query()] = None,
    gallery_id: Annotated[str | None, Query(description="Only records of requests that acted in this gallery.")] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: PageLimit = 100,
):
    """Audit records, oldest first (admin only). Reading the trail is itself recorded, with its filters."""

    async def read() -> schemas.AuditPageOut:
        records, total = await services.audit.page(
            since=since, until=until, operation=operation, subject_id=subject_id, offset=offset, limit=limit,
            gallery_id=gallery_id,
        )
        return presenters.audit_page_out(records, total, offset)

    filters = {"since": since, "until": until, "operation": operation, "offset": offset, "limit": limit}
    return await audited(
        request, services, "audit_read", read, subject_ids=[subject_id] if subject_id else [],
        galleries=[gallery_id] if gallery_id else [],
        summarize=lambda r: {"decisions": [{"filters": filters, "returned": len(r.records), "total": r.total}]},
    )
