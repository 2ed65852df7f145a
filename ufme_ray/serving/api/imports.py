"""/api/v1/imports: bulk imports' states, counts and report locations (role: enrol, for the
imports' galleries; admin)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from ufme_ray.orchestration.imports import IMPORT_ID_PATTERN, ImportState, list_states, read_state
from ufme_ray.serving.api import schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, StoreDep, allow_gallery, require
from ufme_ray.serving.api.errors import ApiError
from ufme_ray.serving.api.openapi import ERRORS, PageLimit, PageOffset

router = APIRouter(prefix="/api/v1/imports", tags=["imports"], responses=ERRORS, dependencies=[Depends(require("enrol"))])


@router.get("/{import_id}", response_model=schemas.ImportOut)
async def get_import(
    import_id: Annotated[str, Path(pattern=IMPORT_ID_PATTERN, description="The id `ufme-ray import` printed.")],
    request: Request,
    services: ServicesDep,
    store: StoreDep,
):
    """State (running, done, failed), photos done of the total, counts per outcome, the report's key."""
    state = await asyncio.to_thread(read_state, store, import_id)
    if state is None:
        raise ApiError(404, "unknown_import", f"no import {import_id!r}")
    allow_gallery(request, state.gallery_id)

    async def read() -> schemas.ImportOut:
        return _import_out(state)

    return await audited(request, services, "import_read", read, galleries=[state.gallery_id])


@router.get("", response_model=schemas.ImportListOut)
async def list_imports(
    request: Request,
    services: ServicesDep,
    store: StoreDep,
    offset: PageOffset = 0,
    limit: PageLimit = 100,
):
    """The imports into the galleries the key may use, newest first, a page at a time."""
    principal = request.state.principal

    async def page() -> schemas.ImportListOut:
        visible = [s for s in await asyncio.to_thread(list_states, store) if principal.may_use(s.gallery_id)]
        return schemas.ImportListOut(
            imports=[_import_out(s) for s in visible[offset : offset + limit]], total=len(visible), offset=offset,
            limit=limit,
        )

    return await audited(request, services, "import_list", page)


def _import_out(state: ImportState) -> schemas.ImportOut:
    return schemas.ImportOut(**state.model_dump(), done=state.done)
