"""Face recognition: ArcFace-aligned crops to L2-normalised embeddings."""

from __future__ import annotations

import numpy as np

from ufme_ray.models.manifest import ModelSpec
from ufme_ray.vision.align import align_arcface
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.onnx_model import OnnxModel


def embedder_crop(spec: ModelSpec, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The ArcFace-aligned crop every recognition model takes."""
    return align_arcface(image_bgr, face.landmarks, spec.preprocess.size[0])


class FaceEmbedder(OnnxModel):
    """A recognition model: ArcFace-aligned 112x112 crops to L2-normalised embeddings."""

    expected_kind = "embedder"

    @property
    def dim(self) -> int:
        return int(self.spec.embedding_dim)

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return embedder_crop(self.spec, image_bgr, face)

    def run(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        vectors = self._infer(crops).reshape(len(crops), -1).astype(np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"model {self.spec.name} returned {vectors.shape[1]}-d vectors, manifest says {self.dim}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)
