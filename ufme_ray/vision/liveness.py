"""Presentation-attack detection (PAD): one model per crop scale, averaged into an ensemble."""

from __future__ import annotations

import numpy as np

from ufme_ray.vision.align import model_crop
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.onnx_model import ScoreModel, softmax


class PadModel(ScoreModel):
    """One presentation-attack detector; `run` returns the live-class probability per crop."""

    expected_kind = "liveness"

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return model_crop(self.spec, image_bgr, face)

    def _scores(self, outputs: np.ndarray) -> np.ndarray:
        return softmax(outputs)[:, self.spec.live_class]


class LivenessEnsemble:
    """Mean live probability over PAD models (Silent-Face's MiniFASNet V2 2.7x + V1SE 4.0x)."""

    def __init__(self, members: list[PadModel]):
        if not members:
            raise ValueError("a liveness ensemble needs at least one PAD model")
        self.members = members

    @property
    def names(self) -> list[str]:
        return [member.spec.name for member in self.members]

    @property
    def providers(self) -> dict[str, list[str]]:
        """Model name -> the execution providers its session got, for every member."""
        return {name: got for member in self.members for name, got in member.providers.items()}

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> list[np.ndarray]:
        return [member.crop(image_bgr, face) for member in self.members]

    def run(self, crops: list[list[np.ndarray]]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.float32)
        scores = [member.run([face_crops[i] for face_crops in crops]) for i, member in enumerate(self.members)]
        return np.mean(scores, axis=0).astype(np.float32)
