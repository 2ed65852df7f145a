"""One Serve deployment per pipeline stage: thin shells over the `vision` model classes.

Replicas receive small uint8 crops (the gateway crops, stages only infer) except the detector,
which receives the decoded image. CPU-bound inference runs in a worker thread so the replica's
event loop keeps answering health checks; onnxruntime releases the GIL while it computes.
"""

from __future__ import annotations

import asyncio
import functools
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from ray import serve
from ray.serve import metrics

from ufme_ray.config import UfmeSettings
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.registry import ModelSpecs, load_detector, load_embedder, load_liveness, load_morph, load_quality

class _StageMetrics:
    """Created lazily inside the replica process (Ray metric objects cannot be pickled across)."""

    def __init__(self) -> None:
        self.latency = metrics.Histogram(
            "ufme_stage_latency_ms",
            description="Model inference time per stage call (one batch), milliseconds.",
            boundaries=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000],
            tag_keys=("stage",),
        )
        self.batch_size = metrics.Histogram(
            "ufme_stage_batch_size",
            description="Requests merged into one call by @serve.batch.",
            boundaries=[1.5, 2.5, 4.5, 8.5, 16.5, 32.5],
            tag_keys=("stage",),
        )


@functools.lru_cache(maxsize=1)
def _metrics() -> _StageMetrics:
    return _StageMetrics()


async def _timed(stage: str, function, *args):
    started = time.perf_counter()
    result = await asyncio.to_thread(function, *args)
    _metrics().latency.observe((time.perf_counter() - started) * 1000, tags={"stage": stage})
    return result


class _Stage:
    async def ping(self) -> bool:
        """Answers once the replica has loaded its model (used by GET /ready)."""
        return True


class BatchConfig(BaseModel):
    """`user_config` of a batching stage: changes apply live through `reconfigure`."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: PositiveInt = Field(8, description="Requests merged into one model call at most.")
    batch_wait_timeout_s: float = Field(0.005, ge=0, description="How long a batch waits to fill.")
    detection_min: float | None = Field(None, ge=0, le=1, description="Detector score threshold (detector only).")


@serve.deployment
class Detector(_Stage):
    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        specs = ModelSpecs.from_settings(settings)
        thresholds = specs.thresholds(settings)
        self._default_min = thresholds.detection_min
        self._detector = load_detector(settings, specs, thresholds)

    def reconfigure(self, user_config: dict) -> None:
        config = BatchConfig.model_validate(user_config)
        self.detect.set_max_batch_size(config.max_batch_size)
        self.detect.set_batch_wait_timeout_s(config.batch_wait_timeout_s)
        self._detector.score_min = config.detection_min if config.detection_min is not None else self._default_min

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def detect(self, images: list[np.ndarray]) -> list[list[DetectedFace]]:
        _metrics().batch_size.observe(len(images), tags={"stage": "detector"})
        return await _timed("detector", self._detector.detect_batch, images)


@serve.deployment
class Quality(_Stage):
    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._model = load_quality(settings, ModelSpecs.from_settings(settings))

    async def score(self, crops: list[np.ndarray]) -> np.ndarray | None:
        if self._model is None:
            return None
        return await _timed("quality", self._model.run, crops)


@serve.deployment
class Liveness(_Stage):
    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._model = load_liveness(settings, ModelSpecs.from_settings(settings))

    async def score(self, crops: list[list[np.ndarray]]) -> np.ndarray | None:
        if self._model is None:
            return None
        return await _timed("liveness", self._model.run, crops)


@serve.deployment
class Morph(_Stage):
    """Scores with the configured MAD model; with none configured every call returns None."""

    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._model = load_morph(settings, ModelSpecs.from_settings(settings))

    async def score(self, crops: list[np.ndarray]) -> np.ndarray | None:
        if self._model is None:
            return None
        return await _timed("morph", self._model.run, crops)


@serve.deployment
class Embedder(_Stage):
    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._model = load_embedder(settings, ModelSpecs.from_settings(settings))

    def reconfigure(self, user_config: dict) -> None:
        config = BatchConfig.model_validate(user_config)
        self.embed.set_max_batch_size(config.max_batch_size)
        self.embed.set_batch_wait_timeout_s(config.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def embed(self, crop_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Each request's crops -> its (n, d) embeddings; all requests' crops run in one session call."""
        _metrics().batch_size.observe(len(crop_lists), tags={"stage": "embedder"})
        flat = [crop for crops in crop_lists for crop in crops]
        vectors = await _timed("embedder", self._model.run, flat)
        results, cursor = [], 0
        for crops in crop_lists:
            results.append(vectors[cursor : cursor + len(crops)])
            cursor += len(crops)
        return results
