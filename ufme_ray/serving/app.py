"""The typed application builder: `serve run serve_config.yaml` / `serve deploy` call `build_app`."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from ufme_ray.serve_config import AppArgs
from ufme_ray.serving.gateway import Gateway
from ufme_ray.serving.searcher import Searcher
from ufme_ray.serving.stages import Detector, Embedder, Liveness, Morph, Quality
from ufme_ray.vision.registry import ModelSpecs


def build_app(args: dict[str, Any]) -> Application:
    """Validate the args and settings, then bind the whole graph once."""
    parsed = AppArgs.model_validate(args)
    settings = parsed.resolve_settings()  # resolved once here; every deployment gets these (transport_json)
    specs = ModelSpecs.from_settings(settings)  # unknown models fail here, before any replica starts
    settings_json = settings.transport_json()
    return Gateway.bind(
        settings_json,
        Detector.bind(settings_json),
        Quality.bind(settings_json),
        Liveness.bind(settings_json),
        Morph.bind(settings_json),
        Embedder.bind(settings_json),
        Searcher.bind(settings_json, specs.embedder.embedding_dim, parsed.shard_num_cpus, parsed.shard_resources),
    )
