"""The local manifest (models.local.yaml): recorded variants become specs the store verifies."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ufme_ray.models.errors import LocalManifestError, ModelMissingError
from ufme_ray.models.manifest import packaged_manifest
from ufme_ray.models.store import resolve_model_path
from ufme_ray.models.variants import (
    LOCAL_MANIFEST,
    CalibrationPhotos,
    Variant,
    read_local_manifest,
    record_variant,
    with_local_variants,
)

MANIFEST = packaged_manifest()
BYTES = b"not really a network, but hashed like one"


def _variant(base: str = "mobilefacenet_foamliu", file: str = "mobilefacenet_foamliu.int8.onnx") -> Variant:
    return Variant(
        name=f"{base}.int8", base=base, base_sha256="0" * 64, precision="int8", file=file,
        sha256=hashlib.sha256(BYTES).hexdigest(), bytes=len(BYTES), method="test",
        calibration=CalibrationPhotos(photos=3, inputs=4, photos_sha256="1" * 64),
        created=datetime(2026, 1, 2, tzinfo=timezone.utc),
    )


def test_a_folder_without_a_local_manifest_has_no_variants(tmp_path: Path):
    assert read_local_manifest(tmp_path).variants == {}
    assert with_local_variants(MANIFEST, tmp_path) is MANIFEST


def test_recorded_variants_round_trip_and_replace_their_previous_record(tmp_path: Path):
    record_variant(tmp_path, _variant())
    rebuilt = _variant().model_copy(update={"method": "rebuilt"})
    record_variant(tmp_path, rebuilt)
    assert read_local_manifest(tmp_path).variants == {"mobilefacenet_foamliu.int8": rebuilt}
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCAL_MANIFEST]  # no temp file left


def test_a_variant_is_a_spec_with_its_own_file_and_checksum(tmp_path: Path):
    record_variant(tmp_path, _variant())
    spec = with_local_variants(MANIFEST, tmp_path).get("mobilefacenet_foamliu.int8", "embedder")
    base = MANIFEST.get("mobilefacenet_foamliu")
    assert (spec.file, spec.variant_of, spec.preprocess, spec.calibration) == (
        "mobilefacenet_foamliu.int8.onnx", base.name, base.preprocess, base.calibration)
    with pytest.raises(ModelMissingError, match="`ufme-ray models quantize --models mobilefacenet_foamliu"):
        resolve_model_path(tmp_path, spec)
    (tmp_path / spec.file).write_bytes(BYTES)
    assert resolve_model_path(tmp_path, spec) == tmp_path / spec.file


def test_a_variant_of_an_unknown_model_is_ignored(tmp_path: Path):
    record_variant(tmp_path, _variant(base="gone", file="gone.int8.onnx"))
    assert "gone.int8" not in with_local_variants(MANIFEST, tmp_path).models


def test_an_invalid_local_manifest_is_an_error_naming_it(tmp_path: Path):
    (tmp_path / LOCAL_MANIFEST).write_text("variants: {x: {name: x}}\n")
    with pytest.raises(LocalManifestError, match=LOCAL_MANIFEST):
        read_local_manifest(tmp_path)
