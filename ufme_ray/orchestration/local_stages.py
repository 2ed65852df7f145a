"""`ports.Stages` over one in-process `vision.Pipeline`: the Engine without Serve, for batch work
(the bulk import's Ray Data actors) where each worker holds every model itself."""

from __future__ import annotations

from typing import get_args

import numpy as np

from ufme_ray.execution_providers import StageName
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.pipeline import Pipeline


class PipelineStages:
    def __init__(self, pipeline: Pipeline):
        self._pipeline = pipeline

    async def detect(self, image_bgr: np.ndarray, score_min: float) -> list[DetectedFace]:
        return self._pipeline.detector.detect(image_bgr, score_min)

    async def quality(self, crops: list[np.ndarray]) -> np.ndarray | None:
        return None if self._pipeline.quality is None else self._pipeline.quality.run(crops)

    async def liveness(self, crops: list[list[np.ndarray]]) -> np.ndarray | None:
        return None if self._pipeline.liveness is None else self._pipeline.liveness.run(crops)

    async def morph(self, crops: list[np.ndarray]) -> np.ndarray | None:
        return None if self._pipeline.morph is None else self._pipeline.morph.run(crops)

    async def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        return self._pipeline.embedder.run(crops)

    async def up(self) -> bool:
        return True

    async def sessions(self) -> list[dict]:
        configured = self._pipeline.providers
        return [{"stage": stage, "models": configured.get(stage, {})} for stage in get_args(StageName)]
