from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ufme_ray.config import UfmeSettings
from ufme_ray.models.manifest import packaged_manifest
from ufme_ray.vision.detector import FaceDetector
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.onnx_model import load_session
from ufme_ray.vision.pipeline import Pipeline


@pytest.fixture(scope="session")
def settings(model_dir: Path, tmp_path_factory) -> UfmeSettings:
    return UfmeSettings(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def pipeline(settings: UfmeSettings) -> Pipeline:
    """The default model set, loaded once per test session."""
    return Pipeline.from_settings(settings)


@pytest.fixture(scope="session", params=[("yunet_2023mar", "fit"), ("yunet_2023mar", "model"), ("scrfd_500m", "fit")],
                ids=lambda param: "-".join(param))
def detector(request, settings: UfmeSettings) -> FaceDetector:
    """Each detector at `detection.input_size` fit (as served by default), YuNet also at model."""
    name, input_size = request.param
    spec = packaged_manifest().get(name, "detector")
    session = load_session(settings.model_dir, spec, settings.runtime, dynamic_size=input_size == "fit")
    detection = settings.detection.model_copy(update={"input_size": input_size})
    return FaceDetector(spec, session, detection, spec.default_threshold)


def main_face(pipeline: Pipeline, path: Path):
    """The main face's analysis of the photo at `path`."""
    return pipeline.analyze_decoded([read_image_file(str(path), pipeline.settings.image)])[0].main_face()


def single_identity_photos(faces_dir: Path) -> list[Path]:
    lfw = sorted(faces_dir.glob("lfw/*/*.jpg"))
    deepface = sorted(p for p in faces_dir.glob("deepface/id*/*.jpg"))
    pad = sorted(faces_dir.glob("pad/*/*.jpg"))
    return lfw + deepface + pad


@pytest.fixture(scope="session")
def decoded_photos(faces_dir: Path) -> list[tuple[Path, np.ndarray]]:
    """Every single-identity photo decoded once for the session (the high-resolution ones are slow)."""
    from ufme_ray.config import ImageLimits

    return [(path, read_image_file(str(path), ImageLimits()).bgr) for path in single_identity_photos(faces_dir)]
