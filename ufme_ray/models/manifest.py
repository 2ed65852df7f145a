"""The model manifest: the packaged list of models with checksums, sources and preprocessing."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from ufme_ray.models.calibration import Calibration
from ufme_ray.models.errors import UnknownModelError

ModelKind = Literal["detector", "quality", "liveness", "morph", "embedder"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocess(_Strict):
    """How pixels become the network input: `(pixel - mean) / std` per channel, in `colour` order."""

    size: tuple[PositiveInt, PositiveInt] = Field(description="Network input (width, height) in pixels.")
    colour: Literal["rgb", "bgr"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layout: Literal["nchw", "nhwc"]


class CropSpec(_Strict):
    """How a PAD/morph model crops the face from the original image, relative to the detector box."""

    style: Literal["scaled_box", "padded_square", "aligned"] = Field(
        description="scaled_box: Silent-Face crop (box scaled about its centre, shifted inside the image); "
        "padded_square: square of scale*max(w,h), zero padding outside; aligned: the 112x112 ArcFace crop."
    )
    scale: float = Field(1.0, gt=0)


class ModelSpec(_Strict):
    name: str
    kind: ModelKind
    family: str = Field(description="Implementation that runs it (see vision.registry).")
    file: str
    sha256: str | None = Field(pattern=r"^[0-9a-f]{64}$", description="None only for models listed, never staged.")
    bytes: PositiveInt | None = None
    urls: list[str] = Field(default_factory=list)
    distribution: str | None = Field(None, description="How to obtain it when there is no upstream file.")
    licence: str
    preprocess: Preprocess
    crop: CropSpec | None = None
    live_class: int | None = Field(None, ge=0)
    morph_class: int | None = Field(None, ge=0)
    embedding_dim: PositiveInt | None = None
    default_threshold: float
    quality_filters: dict[Literal["low", "medium", "high", "auto"], float] | None = Field(
        None, description="Quality models: the threshold of each request quality filter, measured on a photo set."
    )
    calibration: Calibration | None = Field(
        None, description="Embedders: impostor score distribution measured with `ufme-ray calibrate`."
    )
    variant_of: str | None = Field(
        None, description="Set only on a variant built here (models.local.yaml): the model it was built from."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> "ModelSpec":
        if self.kind == "embedder" and self.embedding_dim is None:
            raise ValueError(f"model {self.name}: an embedder needs embedding_dim")
        if self.kind == "liveness" and (self.crop is None or self.live_class is None):
            raise ValueError(f"model {self.name}: a liveness model needs crop and live_class")
        if self.kind == "morph" and (self.crop is None or self.morph_class is None):
            raise ValueError(f"model {self.name}: a morph model needs crop and morph_class")
        if not self.urls and not self.distribution:
            raise ValueError(f"model {self.name}: give upstream urls or a distribution note")
        return self


class ModelManifest(_Strict):
    models: dict[str, ModelSpec]

    @field_validator("models", mode="before")
    @classmethod
    def _names(cls, value: dict) -> dict:
        # In YAML the name is the key; fill it into each entry (entries already parsed keep theirs).
        return {name: spec if isinstance(spec, ModelSpec) else {"name": name, **spec} for name, spec in value.items()}

    def get(self, name: str, kind: ModelKind | None = None) -> ModelSpec:
        """The spec named `name`; raises UnknownModelError for an unknown name or a kind mismatch."""
        spec = self.models.get(name)
        if spec is None:
            raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(sorted(self.models))}")
        if kind is not None and spec.kind != kind:
            raise UnknownModelError(f"model {name!r} is a {spec.kind}, not a {kind}")
        return spec


def load_manifest(path: str | Path | None = None) -> ModelManifest:
    """The manifest at `path`, or the one packaged with UFME-Ray."""
    if path is None:
        return packaged_manifest()
    return ModelManifest.model_validate(yaml.safe_load(Path(path).read_text()))


@functools.lru_cache(maxsize=1)
def packaged_manifest() -> ModelManifest:
    text = resources.files("ufme_ray.models").joinpath("models.yaml").read_text()
    return ModelManifest.model_validate(yaml.safe_load(text))
