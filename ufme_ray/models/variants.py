"""Model variants built here (int8 quantizations), recorded in the model folder's local manifest.

The packaged manifest cannot know the hash of a file built on the user's machine, so each
variant is recorded in `models.local.yaml` beside it: base model, file, sha256, size and what it
was calibrated on. A recorded variant becomes an ordinary `ModelSpec` named `<base>.<precision>`,
so the store's checksum verification, `models list` and `models verify` cover it like any model.
Building a variant needs photos and the vision preprocessing (`ufme_ray.vision.quantize`); this
module only reads and writes the record.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from ufme_ray.models.errors import LocalManifestError
from ufme_ray.models.manifest import ModelManifest, ModelSpec

logger = logging.getLogger(__name__)

LOCAL_MANIFEST = "models.local.yaml"
Precision = Literal["fp32", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationPhotos(_Strict):
    """Which photos calibrated the activation ranges: enough to tell two builds apart."""

    photos: PositiveInt = Field(description="Photos whose preprocessed inputs were fed to the calibrator.")
    inputs: PositiveInt = Field(description="Inputs fed: frames for a detector, face crops for an embedder.")
    photos_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="sha256 over the sorted (path, file sha256) lines of the photos."
    )


class Variant(_Strict):
    name: str = Field(description="`<base>.<precision>`: the name settings and the CLI use.")
    base: str = Field(description="The packaged (or extra-manifest) model it was built from.")
    base_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    precision: Literal["int8"]
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: PositiveInt
    method: str = Field(description="The quantization recipe, with the onnxruntime version that ran it.")
    calibration: CalibrationPhotos
    created: datetime


class LocalManifest(_Strict):
    variants: dict[str, Variant] = Field(default_factory=dict)


def variant_name(base: str, precision: Precision) -> str:
    return f"{base}.{precision}"


def variant_file(spec: ModelSpec, precision: Precision) -> str:
    """`face.onnx` -> `face.int8.onnx`: beside the fp32 file, the two never collide."""
    return f"{Path(spec.file).stem}.{precision}.onnx"


def read_local_manifest(model_dir: str | os.PathLike[str]) -> LocalManifest:
    """The folder's local manifest; empty when there is none. Raises LocalManifestError if unreadable."""
    path = Path(model_dir) / LOCAL_MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return LocalManifest()
    except OSError as exc:
        raise LocalManifestError(f"cannot read {path}: {exc}") from exc
    try:
        return LocalManifest.model_validate(yaml.safe_load(text) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise LocalManifestError(f"{path} is not a valid local model manifest: {exc}") from exc


def record_variant(model_dir: str | os.PathLike[str], variant: Variant) -> Path:
    """Add (or replace) `variant` in the folder's local manifest, written atomically; returns its path."""
    folder = Path(model_dir)
    current = read_local_manifest(folder)
    updated = LocalManifest(variants={**current.variants, variant.name: variant})
    text = yaml.safe_dump(updated.model_dump(mode="json"), sort_keys=False)
    # Same-folder temp file + rename: a crash leaves the old manifest or the new one, never half.
    descriptor, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{LOCAL_MANIFEST}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, folder / LOCAL_MANIFEST)
    finally:
        Path(temp_name).unlink(missing_ok=True)
    return folder / LOCAL_MANIFEST


def variant_spec(base: ModelSpec, variant: Variant) -> ModelSpec:
    """The spec that loads `variant`: the base's preprocessing and thresholds, the variant's file."""
    return base.model_copy(
        update={
            "name": variant.name,
            "file": variant.file,
            "sha256": variant.sha256,
            "bytes": variant.bytes,
            "urls": [],
            "distribution": f"built here from {base.name} by `ufme-ray models quantize` ({variant.method})",
            "variant_of": base.name,
        }
    )


def with_local_variants(manifest: ModelManifest, model_dir: str | os.PathLike[str]) -> ModelManifest:
    """`manifest` plus the variants recorded in `model_dir` (a variant of an unknown base is skipped)."""
    variants = read_local_manifest(model_dir).variants.values()
    added = {}
    for variant in variants:
        base = manifest.models.get(variant.base)
        if base is None:
            logger.warning(
                "%s: %s is built from %s, which no manifest lists; ignored", LOCAL_MANIFEST, variant.name, variant.base
            )
            continue
        added[variant.name] = variant_spec(base, variant)
    return manifest if not added else ModelManifest(models={**manifest.models, **added})
