"""The in-process chain: decode -> detect -> (quality, liveness, morph, embed) per face -> gates.

No Ray here. The Serve application runs the same stages as separate deployments; this class is
the reference chain for the CLI, the accuracy script and the in-process benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ufme_ray.config import UfmeSettings
from ufme_ray.vision.align import model_crop
from ufme_ray.vision.detector import DetectedFace, FaceDetector
from ufme_ray.vision.embedder import FaceEmbedder, embedder_crop
from ufme_ray.vision.errors import ImageError
from ufme_ray.vision.gates import GateResult, ResolvedThresholds, evaluate_gates
from ufme_ray.vision.image import DecodedImage, decode_image
from ufme_ray.vision.liveness import LivenessEnsemble
from ufme_ray.vision.morph import MorphModel
from ufme_ray.vision.quality import QualityModel, quality_crop
from ufme_ray.vision.registry import (
    ModelSpecs,
    load_detector,
    load_embedder,
    load_liveness,
    load_morph,
    load_quality,
)


@dataclass(frozen=True)
class FaceAnalysis:
    box: np.ndarray
    landmarks: np.ndarray
    detection_score: float
    quality: float | None
    liveness: float | None
    morph: float | None
    embedding: np.ndarray
    gates: dict[str, GateResult]

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        return float((self.box[2] - self.box[0]) * (self.box[3] - self.box[1]))

    @property
    def accepted(self) -> bool:
        """True when no configured gate failed."""
        return not any(gate.failed for gate in self.gates.values())

    @property
    def rejected_by(self) -> list[str]:
        return [name for name, gate in self.gates.items() if gate.failed]

    def to_dict(self, *, include_embedding: bool = False) -> dict:
        result = {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "detection_score": round(self.detection_score, 4),
            "quality": _rounded(self.quality),
            "liveness": _rounded(self.liveness),
            "morph": {"status": "not_configured"} if self.morph is None else {"status": "scored", "score": _rounded(self.morph)},
            "gates": {
                name: {"status": g.status, "score": _rounded(g.score), "threshold": g.threshold, "rule": g.rule}
                for name, g in self.gates.items()
            },
            "accepted": self.accepted,
        }
        if include_embedding:
            result["embedding"] = [round(float(v), 6) for v in self.embedding]
        return result


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


@dataclass(frozen=True)
class ImageAnalysis:
    width: int
    height: int
    format: str
    faces: list[FaceAnalysis] = field(default_factory=list)

    def main_face(self) -> FaceAnalysis | None:
        """The photo's subject: the largest face whose box covers the image centre, else the largest.

        Portraits and ID photos centre their subject; a larger bystander at the edge must not win.
        """
        centre_x, centre_y = self.width / 2, self.height / 2
        covering = [f for f in self.faces if f.box[0] <= centre_x <= f.box[2] and f.box[1] <= centre_y <= f.box[3]]
        candidates = covering or self.faces
        return max(candidates, key=lambda f: f.area, default=None)

    def to_dict(self, *, include_embedding: bool = False) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "faces": [face.to_dict(include_embedding=include_embedding) for face in self.faces],
        }


def assemble_faces(
    faces: list[DetectedFace],
    quality: np.ndarray | None,
    liveness: np.ndarray | None,
    morph: np.ndarray | None,
    embeddings: np.ndarray,
    thresholds: ResolvedThresholds,
) -> list[FaceAnalysis]:
    """Per-face records from each stage's scores (None: stage not configured) and the gates."""
    analyses = []
    for i, face in enumerate(faces):
        q = None if quality is None else float(quality[i])
        live = None if liveness is None else float(liveness[i])
        m = None if morph is None else float(morph[i])
        analyses.append(
            FaceAnalysis(
                box=face.box,
                landmarks=face.landmarks,
                detection_score=face.score,
                quality=q,
                liveness=live,
                morph=m,
                embedding=embeddings[i],
                gates=evaluate_gates(thresholds, quality=q, liveness=live, morph=m),
            )
        )
    return analyses


def stage_crops(specs: ModelSpecs, image_bgr: np.ndarray, faces: list[DetectedFace]) -> dict[str, list]:
    """Each face's crop for each stage, as the Serve stages take them: one per face (quality, morph,
    embedder; [] for a stage without a model), and per face one crop per liveness model."""
    return {
        "quality": [quality_crop(specs.quality, image_bgr, f) for f in faces] if specs.quality else [],
        "liveness": [[model_crop(spec, image_bgr, f) for spec in specs.liveness] for f in faces] if specs.liveness else [],
        "morph": [model_crop(specs.morph, image_bgr, f) for f in faces] if specs.morph else [],
        "embedder": [embedder_crop(specs.embedder, image_bgr, f) for f in faces],
    }


def not_applicable(face: FaceAnalysis, gate: str) -> FaceAnalysis:
    """The face with `gate` reported as not applicable (its score kept), so it cannot fail."""
    kept = face.gates[gate]
    return replace(face, gates={**face.gates, gate: GateResult("not_applicable", kept.score, kept.threshold, kept.rule)})


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two L2-normalised embeddings."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


@dataclass
class Pipeline:
    """Every stage in one process. Thread-compatible, not thread-safe: one caller at a time."""

    settings: UfmeSettings
    thresholds: ResolvedThresholds
    detector: FaceDetector
    embedder: FaceEmbedder
    quality: QualityModel | None
    liveness: LivenessEnsemble | None
    morph: MorphModel | None

    @classmethod
    def from_settings(cls, settings: UfmeSettings) -> "Pipeline":
        """Load every configured model (verifying checksums). Raises on unknown, missing or corrupt models."""
        specs = ModelSpecs.from_settings(settings)
        thresholds = specs.thresholds(settings)
        return cls(
            settings,
            thresholds,
            detector=load_detector(settings, specs, thresholds),
            embedder=load_embedder(settings, specs),
            quality=load_quality(settings, specs),
            liveness=load_liveness(settings, specs),
            morph=load_morph(settings, specs),
        )

    @property
    def providers(self) -> dict[str, dict[str, list[str]]]:
        """Stage -> model -> the execution providers its session got (configured stages only)."""
        stages = {
            "detector": self.detector, "quality": self.quality, "liveness": self.liveness,
            "morph": self.morph, "embedder": self.embedder,
        }
        return {stage: model.providers for stage, model in stages.items() if model is not None}

    def decode(self, data: bytes) -> DecodedImage:
        return decode_image(data, self.settings.image)

    def analyze(self, data: bytes) -> ImageAnalysis:
        """Every face in one encoded image. Raises ImageError for input we refuse."""
        return self.analyze_decoded([self.decode(data)])[0]

    def analyze_many(self, images: list[bytes]) -> list[ImageAnalysis | ImageError]:
        """Like `analyze` for many images, with the per-face models run once over all faces.

        A refused image yields its ImageError in its slot instead of failing the batch.
        """
        decoded: list[DecodedImage | ImageError] = []
        for data in images:
            try:
                decoded.append(self.decode(data))
            except ImageError as exc:
                decoded.append(exc)
        good = [image for image in decoded if isinstance(image, DecodedImage)]
        analyses = iter(self.analyze_decoded(good))
        return [image if isinstance(image, ImageError) else next(analyses) for image in decoded]

    def analyze_decoded(self, images: list[DecodedImage]) -> list[ImageAnalysis]:
        detections = self.detector.detect_batch([image.bgr for image in images])
        located = [(image, face) for image, faces in zip(images, detections) for face in faces]
        scores = self.score_faces(located)
        results, cursor = [], 0
        for image, faces in zip(images, detections):
            results.append(ImageAnalysis(image.width, image.height, image.format, scores[cursor : cursor + len(faces)]))
            cursor += len(faces)
        return results

    def score_faces(self, located: list[tuple[DecodedImage, DetectedFace]]) -> list[FaceAnalysis]:
        """Run quality, liveness, morph and embedding over all faces, one session call per model."""
        if not located:
            return []
        quality = self._run(self.quality, located)
        liveness = self._run(self.liveness, located)
        morph = self._run(self.morph, located)
        embeddings = self.embedder.run([self.embedder.crop(image.bgr, face) for image, face in located])
        return assemble_faces([face for _, face in located], quality, liveness, morph, embeddings, self.thresholds)

    @staticmethod
    def _run(stage, located) -> np.ndarray | None:
        if stage is None:
            return None
        return stage.run([stage.crop(image.bgr, face) for image, face in located])

    def compare(self, first: bytes, second: bytes) -> "Comparison":
        """Similarity of the main face (see `ImageAnalysis.main_face`) of each image and the decision."""
        a, b = self.analyze(first), self.analyze(second)
        face_a, face_b = a.main_face(), b.main_face()
        if face_a is None or face_b is None:
            raise NoFaceError("no face found in the " + ("first" if face_a is None else "second") + " image")
        similarity = cosine_similarity(face_a.embedding, face_b.embedding)
        return Comparison(similarity, self.thresholds.similarity_min, similarity >= self.thresholds.similarity_min, a, b)


@dataclass(frozen=True)
class Comparison:
    similarity: float
    threshold: float
    match: bool
    first: ImageAnalysis
    second: ImageAnalysis


class NoFaceError(ImageError):
    """The image decoded, but holds no face the detector accepts."""

    code = "no_face"
