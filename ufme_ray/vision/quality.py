"""Face-image quality: LightQNet, on its own 3-point aligned crop."""

from __future__ import annotations

import numpy as np

from ufme_ray.models.manifest import ModelSpec
from ufme_ray.vision.align import align_lightqnet
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.onnx_model import ScoreModel


def quality_crop(spec: ModelSpec, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
    """LightQNet's own 3-point aligned crop."""
    return align_lightqnet(image_bgr, face.landmarks, spec.preprocess.size[0])


class QualityModel(ScoreModel):
    """LightQNet: a face-image quality score in (0, 1); higher is better."""

    expected_kind = "quality"

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return quality_crop(self.spec, image_bgr, face)

    def _scores(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.reshape(len(outputs))
