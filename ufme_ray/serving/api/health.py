"""/health (liveness probe) and /ready (readiness probe); no key needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ufme_ray.serving.api import presenters, schemas
from ufme_ray.serving.api.dependencies import EngineDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def liveness_probe():
    """The process is up (liveness probe)."""
    return {"status": "ok"}


@router.get("/ready", response_model=schemas.ReadyOut, responses={503: {"model": schemas.ReadyOut}})
async def readiness_probe(engine: EngineDep):
    """All shards restored and every stage answering (readiness probe); 503 until then."""
    ready = presenters.ready_out(await engine.readiness())
    return JSONResponse(ready.model_dump(), status_code=200 if ready.ready else 503)
