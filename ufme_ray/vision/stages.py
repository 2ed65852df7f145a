"""The per-face models: quality, liveness (PAD), morph detection (MAD) and embedding.

Each class owns one onnxruntime session (or, for liveness, an ensemble of them) and splits its
work in two so a serving layer can batch across requests:
- `crop(image_bgr, face)`: cheap, pure NumPy/OpenCV, returns the model-ready uint8 crop;
- `run(crops)`: one session call for N crops, returns N scores (or vectors).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ufme_ray.vision.align import align_arcface, align_lightqnet, crop_padded_square, crop_scaled_box
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.manifest import ModelSpec
from ufme_ray.vision.onnx_model import softmax, to_tensor


class _OnnxStage:
    expected_kind: str

    def __init__(self, spec: ModelSpec, session: ort.InferenceSession):
        if spec.kind != self.expected_kind:
            raise ValueError(f"model {spec.name} is a {spec.kind}, not a {self.expected_kind}")
        self.spec = spec
        self.session = session
        self._input_name = session.get_inputs()[0].name

    def _infer(self, crops: list[np.ndarray]) -> np.ndarray:
        return self.session.run(None, {self._input_name: to_tensor(crops, self.spec.preprocess)})[0]


def quality_crop(spec: ModelSpec, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
    """LightQNet's own 3-point aligned crop."""
    return align_lightqnet(image_bgr, face.landmarks, spec.preprocess.size[0])


def embedder_crop(spec: ModelSpec, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The ArcFace-aligned crop every recognition model takes."""
    return align_arcface(image_bgr, face.landmarks, spec.preprocess.size[0])


def model_crop(spec: ModelSpec, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The crop a PAD or MAD model expects, per its manifest `crop` spec."""
    crop = spec.crop
    size = spec.preprocess.size
    if crop.style == "scaled_box":
        return crop_scaled_box(image_bgr, face.box, crop.scale, size)
    if crop.style == "padded_square":
        return crop_padded_square(image_bgr, face.box, crop.scale, size)
    return align_arcface(image_bgr, face.landmarks, size[0])


class QualityModel(_OnnxStage):
    """LightQNet: a face-image quality score in (0, 1); higher is better."""

    expected_kind = "quality"

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return quality_crop(self.spec, image_bgr, face)

    def run(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.float32)
        return self._infer(crops).reshape(len(crops)).astype(np.float32)


class PadModel(_OnnxStage):
    """One presentation-attack detector; `run` returns the live-class probability per crop."""

    expected_kind = "liveness"

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return model_crop(self.spec, image_bgr, face)

    def run(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.float32)
        return softmax(self._infer(crops))[:, self.spec.live_class].astype(np.float32)


class LivenessEnsemble:
    """Mean live probability over PAD models (Silent-Face's MiniFASNet V2 2.7x + V1SE 4.0x)."""

    def __init__(self, members: list[PadModel]):
        if not members:
            raise ValueError("a liveness ensemble needs at least one PAD model")
        self.members = members

    @property
    def names(self) -> list[str]:
        return [member.spec.name for member in self.members]

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> list[np.ndarray]:
        return [member.crop(image_bgr, face) for member in self.members]

    def run(self, crops: list[list[np.ndarray]]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.float32)
        scores = [member.run([face_crops[i] for face_crops in crops]) for i, member in enumerate(self.members)]
        return np.mean(scores, axis=0).astype(np.float32)


class MorphModel(_OnnxStage):
    """A single-image morph-attack detector driven by its manifest entry.

    The manifest says how to crop (`crop`), how to normalise (`preprocess`) and which softmax
    class means "morph" (`morph_class`); a single-logit output is read as a sigmoid score.
    """

    expected_kind = "morph"

    def crop(self, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
        return model_crop(self.spec, image_bgr, face)

    def run(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros(0, np.float32)
        logits = self._infer(crops).reshape(len(crops), -1)
        if logits.shape[1] == 1:
            return (1.0 / (1.0 + np.exp(-logits[:, 0]))).astype(np.float32)
        return softmax(logits)[:, self.spec.morph_class].astype(np.float32)


class Embedder(_OnnxStage):
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
