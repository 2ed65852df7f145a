"""Model factory: config names -> manifest entries -> the class that runs each family.

Selection is by explicit name and family; anything unknown raises instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ufme_ray.config import UfmeSettings
from ufme_ray.models.errors import UnknownModelError, VariantMissingError
from ufme_ray.models.manifest import ModelManifest, ModelSpec, load_manifest, packaged_manifest
from ufme_ray.models.variants import Precision, variant_name, with_local_variants
from ufme_ray.vision.detector import FaceDetector
from ufme_ray.vision.embedder import FaceEmbedder
from ufme_ray.vision.gates import ResolvedThresholds
from ufme_ray.vision.liveness import LivenessEnsemble, PadModel
from ufme_ray.vision.morph import MorphModel
from ufme_ray.vision.onnx_model import load_session
from ufme_ray.vision.quality import QualityModel

DETECTOR_FAMILIES = {"yunet", "scrfd"}
QUALITY_FAMILIES = {"lightqnet"}
LIVENESS_FAMILIES = {"minifasnet"}
MORPH_FAMILIES = {"onnx_mad"}
EMBEDDER_FAMILIES = {"arcface"}


def manifest_for(settings: UfmeSettings) -> ModelManifest:
    """The packaged manifest, plus the models of `settings.model_manifest` if one is configured,
    plus the variants recorded in the model folder's models.local.yaml."""
    manifest = packaged_manifest()
    if settings.model_manifest is not None:
        extra = load_manifest(settings.model_manifest)
        manifest = ModelManifest(models={**manifest.models, **extra.models})
    return with_local_variants(manifest, settings.model_dir)


def _at_precision(manifest: ModelManifest, name: str, precision: Precision, settings: UfmeSettings) -> str:
    """The name of `name`'s variant at `precision`; never falls back to fp32 when it is missing."""
    if precision == "fp32":
        return name
    manifest.get(name)  # an unknown base is an unknown model, not a missing variant
    variant = variant_name(name, precision)
    if variant not in manifest.models:
        raise VariantMissingError(name, precision, settings.model_dir)
    return variant


# What the benchmarks compare: both models at one precision, or one model's int8 variant chosen by
# name (`models.embedder: <name>.int8`) with the other at fp32.
PRECISION_MIXES = ("fp32", "int8", "int8-detector", "int8-embedder")


def precision_mix(mix: str, settings: UfmeSettings) -> dict:
    """The settings overrides (`runtime`, `models`) that run `settings`' models as `mix` says."""
    if mix not in PRECISION_MIXES:
        raise ValueError(f"unknown precision mix {mix!r} (known: {', '.join(PRECISION_MIXES)})")
    if mix in ("fp32", "int8"):
        return {"runtime": {"precision": mix}, "models": settings.models.model_dump()}
    kind = mix.removeprefix("int8-")
    models = {**settings.models.model_dump(), kind: variant_name(getattr(settings.models, kind), "int8")}
    return {"runtime": {"precision": "fp32"}, "models": models}


def _spec(manifest: ModelManifest, name: str, kind: str, families: set[str]) -> ModelSpec:
    spec = manifest.get(name, kind)
    if spec.family not in families:
        raise UnknownModelError(
            f"model {name!r} is of family {spec.family!r}, which UFME-Ray cannot run as a {kind} "
            f"(supported: {', '.join(sorted(families))})"
        )
    return spec


@dataclass(frozen=True)
class ModelSpecs:
    """The manifest entries the settings select, validated before any file is opened."""

    detector: ModelSpec
    quality: ModelSpec | None
    liveness: list[ModelSpec]
    morph: ModelSpec | None
    embedder: ModelSpec

    @classmethod
    def from_settings(cls, settings: UfmeSettings) -> "ModelSpecs":
        manifest = manifest_for(settings)
        choice = settings.models
        # Only the detector and the embedder have int8 variants; the per-face gates stay fp32.
        precision = settings.runtime.precision
        return cls(
            detector=_spec(manifest, _at_precision(manifest, choice.detector, precision, settings), "detector",
                           DETECTOR_FAMILIES),
            quality=_spec(manifest, choice.quality, "quality", QUALITY_FAMILIES) if choice.quality else None,
            liveness=[_spec(manifest, name, "liveness", LIVENESS_FAMILIES) for name in choice.liveness],
            morph=_spec(manifest, choice.morph, "morph", MORPH_FAMILIES) if choice.morph else None,
            embedder=_spec(manifest, _at_precision(manifest, choice.embedder, precision, settings), "embedder",
                           EMBEDDER_FAMILIES),
        )

    @property
    def names(self) -> list[str]:
        chosen = [self.detector, self.quality, *self.liveness, self.morph, self.embedder]
        return [spec.name for spec in chosen if spec is not None]

    def quality_filter(self, level: str) -> float:
        """The quality model's threshold for a request's quality filter (low/medium/high/auto), from
        the manifest. ValueError when the configured quality model ships none."""
        levels = None if self.quality is None else self.quality.quality_filters
        if not levels or level not in levels:
            name = None if self.quality is None else self.quality.name
            raise ValueError(f"the quality model {name!r} has no quality_filter level {level!r} in the model manifest")
        return levels[level]

    def thresholds(self, settings: UfmeSettings) -> ResolvedThresholds:
        return ResolvedThresholds.resolve(
            settings.thresholds,
            detector=self.detector,
            embedder=self.embedder,
            quality=self.quality,
            liveness=self.liveness,
            morph=self.morph,
        )


def load_detector(settings: UfmeSettings, specs: ModelSpecs, thresholds: ResolvedThresholds) -> FaceDetector:
    fit = settings.detection.input_size == "fit"
    session = load_session(settings.model_dir, specs.detector, settings.runtime, dynamic_size=fit)
    return FaceDetector(specs.detector, session, settings.detection, thresholds.detection_min)


def load_quality(settings: UfmeSettings, specs: ModelSpecs) -> QualityModel | None:
    if specs.quality is None:
        return None
    return QualityModel(specs.quality, load_session(settings.model_dir, specs.quality, settings.runtime))


def load_liveness(settings: UfmeSettings, specs: ModelSpecs) -> LivenessEnsemble | None:
    if not specs.liveness:
        return None
    members = [
        PadModel(spec, load_session(settings.model_dir, spec, settings.runtime, dynamic_batch=True))
        for spec in specs.liveness
    ]
    return LivenessEnsemble(members)


def load_morph(settings: UfmeSettings, specs: ModelSpecs) -> MorphModel | None:
    if specs.morph is None:
        return None
    return MorphModel(specs.morph, load_session(settings.model_dir, specs.morph, settings.runtime, dynamic_batch=True))


def load_embedder(settings: UfmeSettings, specs: ModelSpecs) -> FaceEmbedder:
    session = load_session(settings.model_dir, specs.embedder, settings.runtime, dynamic_batch=True)
    return FaceEmbedder(specs.embedder, session)
