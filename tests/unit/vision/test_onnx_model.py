"""Sessions: batched runs equal one-by-one runs; a missing or corrupt file is refused by the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ufme_ray.models.errors import ModelCorruptError, ModelMissingError
from ufme_ray.models.manifest import packaged_manifest
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.onnx_model import load_session

YUNET = packaged_manifest().get("yunet_2023mar")


def test_batched_inference_equals_one_by_one(pipeline, faces_dir: Path):
    """The batch-dynamic graph rewrite must not change a single output."""
    images = [read_image_file(str(p), pipeline.settings.image).bgr for p in sorted(faces_dir.glob("lfw/A*/*_0001.jpg"))]
    located = [(img, pipeline.detector.detect(img)[0]) for img in images]
    assert len(located) >= 4
    for stage in (pipeline.embedder, pipeline.liveness, pipeline.quality):
        crops = [stage.crop(img, face) for img, face in located]
        batched = stage.run(crops)
        single = np.concatenate([stage.run([crop]) for crop in crops])
        assert np.allclose(batched, single, atol=1e-5)


def test_a_missing_file_says_how_to_fetch_it(settings, tmp_path: Path):
    with pytest.raises(ModelMissingError, match="`ufme-ray models pull yunet_2023mar`"):
        load_session(tmp_path, YUNET, settings.runtime)


def test_a_corrupt_file_is_never_loaded(settings, tmp_path: Path):
    path = Path(shutil.copyfile(settings.model_dir / YUNET.file, tmp_path / YUNET.file))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ModelCorruptError, match="sha256"):
        load_session(tmp_path, YUNET, settings.runtime)
