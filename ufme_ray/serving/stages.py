"""One Serve deployment per pipeline stage: thin shells over the `vision` model classes.

Replicas receive small uint8 crops (the gateway crops, stages only infer) except the detector,
which receives the decoded image. CPU-bound inference runs in a worker thread so the replica's
event loop keeps answering health checks; onnxruntime releases the GIL while it computes.

Each replica reports which execution providers its model sessions actually got (the settings ask,
the machine decides): `status()` on the deployment handle, one log line per model in the replica
log, and the `ufme_stage_model_providers` gauge on the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt
from ray import serve
from ray.serve import metrics

from ufme_ray.config import UfmeSettings
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.registry import ModelSpecs, load_detector, load_embedder, load_liveness, load_morph, load_quality

logger = logging.getLogger("ray.serve")  # Serve's logger: its lines land in the replica's log
# Ray exports a gauge's value for a short while after each set (twice the report interval), so the
# providers gauge, constant for a replica's life, is set again this often to stay in /metrics.
PROVIDERS_REFRESH_S = 5.0


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
        self.providers = metrics.Gauge(
            "ufme_stage_model_providers",
            description="1 per model session of a stage replica; `providers` lists what the session got, most "
            "preferred first (CPUExecutionProvider alone: it runs on CPU).",
            tag_keys=("stage", "model", "providers"),
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
    stage: str
    _providers: dict[str, list[str]]

    def _loaded(self, model) -> None:
        """Record, log and export the execution providers of `model`'s sessions (None: not configured)."""
        self._providers = {} if model is None else model.providers
        for name, providers in self._providers.items():
            logger.info("stage %s: model %s runs on %s", self.stage, name, providers)
        if self._providers:
            gauge = _metrics().providers  # created here, not in the thread: one set of metric objects
            threading.Thread(target=self._export_providers, args=(gauge,), name="providers-gauge", daemon=True).start()

    def _export_providers(self, gauge: metrics.Gauge) -> None:
        while True:
            for name, providers in self._providers.items():
                gauge.set(1, tags={"stage": self.stage, "model": name, "providers": ",".join(providers)})
            time.sleep(PROVIDERS_REFRESH_S)

    async def ping(self) -> bool:
        """Answers once the replica has loaded its model (used by GET /ready)."""
        return True

    async def status(self) -> dict:
        """This replica's stage and, per model, the execution providers its session got."""
        return {"stage": self.stage, "models": self._providers}


class BatchConfig(BaseModel):
    """`user_config` of a batching stage: changes apply live through `reconfigure`."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: PositiveInt = Field(8, description="Requests merged into one model call at most.")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, description="How long a batch waits to fill; at 0 it takes what queued while the previous batch ran."
    )


class _BatchingStage(_Stage):
    """A stage whose @serve.batch method (named by `batched`) takes its batching from `user_config`."""

    batched: str

    def reconfigure(self, user_config: dict) -> None:
        config = BatchConfig.model_validate(user_config)
        method = getattr(self, self.batched)
        method.set_max_batch_size(config.max_batch_size)
        method.set_batch_wait_timeout_s(config.batch_wait_timeout_s)


@serve.deployment
class Detector(_BatchingStage):
    """Detects at the threshold each request names: the Gateway's live config is its one source."""

    stage, batched = "detector", "detect"

    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        specs = ModelSpecs.from_settings(settings)
        self._detector = load_detector(settings, specs, specs.thresholds(settings))
        self._loaded(self._detector)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def detect(self, images: list[np.ndarray], score_mins: list[float]) -> list[list[DetectedFace]]:
        _metrics().batch_size.observe(len(images), tags={"stage": "detector"})
        return await _timed("detector", self._detector.detect_batch, images, score_mins)


class _ScoreStage(_Stage):
    """A stage that turns crops into one score per face, or None when its model is not configured."""

    load: staticmethod

    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._model = self.load(settings, ModelSpecs.from_settings(settings))
        self._loaded(self._model)

    async def score(self, crops: list) -> np.ndarray | None:
        if self._model is None:
            return None
        return await _timed(self.stage, self._model.run, crops)


@serve.deployment
class Quality(_ScoreStage):
    stage, load = "quality", staticmethod(load_quality)


@serve.deployment
class Liveness(_ScoreStage):
    """Crops come per face as one crop per PAD model of the ensemble."""

    stage, load = "liveness", staticmethod(load_liveness)


@serve.deployment
class Morph(_ScoreStage):
    """Scores with the configured MAD model; with none configured every call returns None."""

    stage, load = "morph", staticmethod(load_morph)


@serve.deployment
class Embedder(_BatchingStage):
    stage, batched = "embedder", "embed"

    def __init__(self, settings_json: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._model = load_embedder(settings, ModelSpecs.from_settings(settings))
        self._loaded(self._model)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
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
