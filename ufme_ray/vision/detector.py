"""Face detectors (YuNet, SCRFD): boxes, scores and 5 landmarks in original-image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

from ufme_ray.config import DetectionSettings
from ufme_ray.models.manifest import ModelSpec
from ufme_ray.vision.onnx_model import to_tensor

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class DetectedFace:
    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2) float32: eyes, nose, mouth corners
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


def letterbox(image_bgr: np.ndarray, size: tuple[int, int], *, fit: bool = False) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio so the image fits `size` (w, h), top-left, zero padding.

    With `fit`, the canvas is cut to the resized image, padded only up to a multiple of the largest
    stride (every head's grid must divide it): the same scale, less padding to run the network on.
    Returns the padded image and the scale (network pixels per original pixel).
    """
    height, width = image_bgr.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    new_w, new_h = max(int(round(width * scale)), 1), max(int(round(height * scale)), 1)
    if fit:
        size = (-(-new_w // STRIDES[-1]) * STRIDES[-1], -(-new_h // STRIDES[-1]) * STRIDES[-1])
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=interpolation)
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = resized
    return canvas, scale


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first."""
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    xywh = np.column_stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou_threshold)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def decode_yunet(outputs: dict[str, np.ndarray], input_size: tuple[int, int], score_min: float):
    """YuNet heads -> (boxes, landmarks, scores) in network pixels, for scores >= score_min."""
    width = input_size[0]
    all_boxes, all_kps, all_scores = [], [], []
    for stride in STRIDES:
        cls = outputs[f"cls_{stride}"].reshape(-1)
        obj = outputs[f"obj_{stride}"].reshape(-1)
        scores = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.nonzero(scores >= score_min)[0]
        if keep.size == 0:
            continue
        cols_per_row = width // stride
        cells = np.column_stack([keep % cols_per_row, keep // cols_per_row]).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
        kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep].reshape(-1, 5, 2)
        centre = (cells + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:4]) * stride
        all_boxes.append(np.column_stack([centre - size / 2, centre + size / 2]))
        all_kps.append((cells[:, None, :] + kps) * stride)
        all_scores.append(scores[keep])
    return _concat(all_boxes, all_kps, all_scores)


def decode_scrfd(outputs: list[np.ndarray], input_size: tuple[int, int], score_min: float, anchors_per_cell: int = 2):
    """SCRFD heads (scores x3, distances x3, keypoints x3) -> (boxes, landmarks, scores)."""
    width, height = input_size
    levels = len(STRIDES)
    all_boxes, all_kps, all_scores = [], [], []
    for level, stride in enumerate(STRIDES):
        scores = outputs[level].reshape(-1)
        keep = np.nonzero(scores >= score_min)[0]
        if keep.size == 0:
            continue
        rows, cols = height // stride, width // stride
        grid = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2)
        centres = (np.repeat(grid, anchors_per_cell, axis=0) * stride).astype(np.float32)[keep]
        distances = outputs[levels + level].reshape(-1, 4)[keep] * stride
        offsets = outputs[2 * levels + level].reshape(-1, 5, 2)[keep] * stride
        all_boxes.append(np.column_stack([centres - distances[:, :2], centres + distances[:, 2:]]))
        all_kps.append(centres[:, None, :] + offsets)
        all_scores.append(scores[keep])
    return _concat(all_boxes, all_kps, all_scores)


def _concat(boxes: list, kps: list, scores: list):
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return (
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(kps).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
    )


class FaceDetector:
    """One detector model: `detect(image)` returns every face, largest first.

    Both YuNet and SCRFD take a letterboxed frame: 640x640, or with `detection.input_size: fit`
    (and a session whose input size is not fixed, see `onnx_model.make_size_dynamic`) the same
    scale cut to the image's shape. They differ in colour order and normalisation (from the
    manifest) and in how their heads decode.
    """

    def __init__(self, spec: ModelSpec, session: ort.InferenceSession, settings: DetectionSettings, score_min: float):
        if spec.family not in ("yunet", "scrfd"):
            raise ValueError(f"model {spec.name} of family {spec.family!r} is not a detector family")
        self.spec = spec
        self.session = session
        self.settings = settings
        self.score_min = score_min
        self._input_name = session.get_inputs()[0].name
        self._output_names = [output.name for output in session.get_outputs()]
        shape = session.get_inputs()[0].shape
        spatial = shape[2:4] if spec.preprocess.layout == "nchw" else shape[1:3]
        self.fits_images = settings.input_size == "fit" and not any(isinstance(dim, int) for dim in spatial)

    @property
    def providers(self) -> dict[str, list[str]]:
        """Model name -> the execution providers its session got, most preferred first."""
        return {self.spec.name: self.session.get_providers()}

    def detect(self, image_bgr: np.ndarray, score_min: float | None = None) -> list[DetectedFace]:
        """Faces scoring at least `score_min` (default: the detector's own threshold)."""
        score_min = self.score_min if score_min is None else score_min
        canvas, scale = letterbox(image_bgr, self.spec.preprocess.size, fit=self.fits_images)
        size = (canvas.shape[1], canvas.shape[0])
        raw = self.session.run(None, {self._input_name: to_tensor([canvas], self.spec.preprocess)})
        if self.spec.family == "yunet":
            boxes, kps, scores = decode_yunet(dict(zip(self._output_names, raw)), size, score_min)
        else:
            boxes, kps, scores = decode_scrfd(raw, size, score_min)
        keep = non_max_suppression(boxes, scores, self.settings.nms_iou)
        faces = []
        for index in keep:
            # Boxes are not clipped: a face cut by the image border keeps its true extent, consistent
            # with its landmarks (which may lie outside the image too).
            box = (boxes[index] / scale).astype(np.float32)
            face = DetectedFace(box=box, landmarks=(kps[index] / scale).astype(np.float32), score=float(scores[index]))
            if min(face.width, face.height) >= self.settings.min_face_px:
                faces.append(face)
        faces.sort(key=lambda f: f.width * f.height, reverse=True)
        return faces[: self.settings.max_faces]

    def detect_batch(
        self, images_bgr: list[np.ndarray], score_mins: list[float | None] | None = None
    ) -> list[list[DetectedFace]]:
        # The exported graphs have a fixed batch of 1 and per-stride outputs without a batch
        # dim, so images run one by one; batching still saves the per-request overhead upstream.
        score_mins = score_mins or [None] * len(images_bgr)
        return [self.detect(image, score_min) for image, score_min in zip(images_bgr, score_mins)]
