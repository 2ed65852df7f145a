"""/api/v1/imports/{import_id}: a bulk import's state, counts and report location (role: enrol,
for the import's gallery; admin)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from ufme_ray.orchestration.imports import IMPORT_ID_PATTERN, read_state
from ufme_ray.serving.api import schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, allow_gallery, require
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.api.openapi import ERRORS

router = APIRouter(prefix="/api/v1/imports", tags=["imports"], responses=ERRORS, dependencies=[Depends(require("enrol"))])


@router.get("/{import_id}", response_model=schemas.ImportOut)
async def get_import(
    import_id: Annotated[str, Path(pattern=IMPORT_ID_PATTERN, description="The id `ufme-ray import` printed.")],
    request: Request,
    services: ServicesDep,
):
    """State (running, done, failed), photos done of the total, counts per outcome, the report's key."""
    if services.store is None:
        raise ApiError(503, "not_ready", "the gateway has no storage configured")
    state = await asyncio.to_thread(read_state, services.store, import_id)
    if state is None:
        raise ApiError(404, "unknown_import", f"no import {import_id!r}")
    allow_gallery(request, state.gallery_id)

    async def read() -> schemas.ImportOut:
        return schemas.ImportOut(**state.model_dump(), done=state.done)

    return await audited(request, services, "import_read", read, galleries=[state.gallery_id])
