"""Morph-attack detection (MAD) on a single image."""

from __future__ import annotations

import numpy as np

from ufme_ray.vision.align import model_crop
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.onnx_model import ScoreModel, softmax


class MorphModel(ScoreModel):
    """A single-image morph-attack detector driven by its manifest entry.

    The manifest says how to crop (`crop`), how to normalise (`preprocess`) and which softmax
    class means "morph" (`morph_class`); a single-logit output is read as a sigmoid score.
    """

    expected_kind = "morph"

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return model_crop(self.spec, image_bgr, face)

    def _scores(self, outputs: np.ndarray) -> np.ndarray:
        logits = outputs.reshape(len(outputs), -1)
        if logits.shape[1] == 1:
            return 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return softmax(logits)[:, self.spec.morph_class]
