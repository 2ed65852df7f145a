"""/api/v1/keys/me: who the presented key is — its role, what the role may call, its galleries,
capture types and quota (any role). Clients such as the console show what the key allows."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.auditing import audited
from ufme_ray.serving.api.dependencies import ServicesDep, require
from ufme_ray.serving.api.openapi import ERRORS

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses=ERRORS, dependencies=[Depends(require("self"))])


@router.get("/me", response_model=schemas.KeyOut)
async def get_own_key(request: Request, services: ServicesDep):
    """The key's id, role, the operation groups the role may call, galleries, capture types and quota;
    never the key or its digest."""

    async def read() -> schemas.KeyOut:
        return presenters.key_out(request.state.principal)

    return await audited(request, services, "key_read", read)
