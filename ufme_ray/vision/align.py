"""Face alignment and cropping: the one place that knows the reference landmark templates.

Landmarks are always 5 points in this order: left eye, right eye, nose tip, left mouth corner,
right mouth corner (left/right as seen in the image).
"""

from __future__ import annotations

import cv2
import numpy as np

from ufme_ray.models.manifest import ModelSpec
from ufme_ray.vision.detector import DetectedFace

# ArcFace 112x112 template (InsightFace `arcface_src`; foamliu's MobileFaceNet uses the same).
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

# LightQNet's 3-point template (eyes, mouth centre) for a 160x160 crop, later resized to 96x96.
LIGHTQNET_TEMPLATE_160 = np.array([[34.19, 46.16], [65.65, 45.98], [50.12, 82.40]], dtype=np.float64) * 1.6
LIGHTQNET_CROP_PX = 160


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src to dst.

    Umeyama (1991). Returns the 2x3 matrix for cv2.warpAffine.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1  # the best orthogonal map is a reflection: flip the weakest axis instead
    rotation = u @ np.diag(d) @ vt
    src_var = (src_c**2).sum() / n
    scale = (s * d).sum() / src_var if src_var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_arcface(image_bgr: np.ndarray, landmarks: np.ndarray, size_px: int = 112) -> np.ndarray:
    """The size_px x size_px ArcFace-aligned crop of the face with these 5 landmarks."""
    template = ARCFACE_TEMPLATE_112 * (size_px / 112.0)
    matrix = similarity_transform(landmarks, template)
    return cv2.warpAffine(image_bgr, matrix, (size_px, size_px), borderValue=0.0)


def align_lightqnet(image_bgr: np.ndarray, landmarks: np.ndarray, size_px: int) -> np.ndarray:
    """LightQNet's crop: eyes + mouth centre to its template at 160x160, resized to size_px."""
    points = np.vstack([landmarks[0], landmarks[1], landmarks[3:5].mean(axis=0)])
    matrix = similarity_transform(points, LIGHTQNET_TEMPLATE_160)
    crop = cv2.warpAffine(image_bgr, matrix, (LIGHTQNET_CROP_PX, LIGHTQNET_CROP_PX), borderValue=0.0)
    return cv2.resize(crop, (size_px, size_px), interpolation=cv2.INTER_AREA)


def crop_scaled_box(image_bgr: np.ndarray, box: np.ndarray, scale: float, size_px: tuple[int, int]) -> np.ndarray:
    """Silent-Face's PAD crop: the box scaled about its centre, shrunk only if it cannot fit, shifted inside."""
    height, width = image_bgr.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    box_w, box_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min(scale, (height - 1) / box_h, (width - 1) / box_w)
    new_w, new_h = box_w * scale, box_h * scale
    centre_x, centre_y = x1 + box_w / 2, y1 + box_h / 2
    left, top = centre_x - new_w / 2, centre_y - new_h / 2
    right, bottom = centre_x + new_w / 2, centre_y + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > width - 1:
        left -= right - (width - 1)
        right = width - 1
    if bottom > height - 1:
        top -= bottom - (height - 1)
        bottom = height - 1
    crop = image_bgr[int(top) : int(bottom) + 1, int(left) : int(right) + 1]
    return cv2.resize(crop, size_px)


def crop_padded_square(image_bgr: np.ndarray, box: np.ndarray, scale: float, size_px: tuple[int, int]) -> np.ndarray:
    """A square of side scale*max(w, h) centred on the box, zero-padded outside the image, letterboxed."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(int(round(max(x2 - x1, y2 - y1) * scale)), 1)
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(centre_x - side / 2)), int(round(centre_y - side / 2))
    height, width = image_bgr.shape[:2]
    square = np.zeros((side, side, 3), dtype=image_bgr.dtype)
    src_x1, src_y1 = max(left, 0), max(top, 0)
    src_x2, src_y2 = min(left + side, width), min(top + side, height)
    if src_x2 > src_x1 and src_y2 > src_y1:
        square[src_y1 - top : src_y2 - top, src_x1 - left : src_x2 - left] = image_bgr[src_y1:src_y2, src_x1:src_x2]
    return cv2.resize(square, size_px, interpolation=cv2.INTER_AREA)


def model_crop(spec: ModelSpec, image_bgr: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The crop a PAD or MAD model expects, per its manifest `crop` spec."""
    crop = spec.crop
    size = spec.preprocess.size
    if crop.style == "scaled_box":
        return crop_scaled_box(image_bgr, face.box, crop.scale, size)
    if crop.style == "padded_square":
        return crop_padded_square(image_bgr, face.box, crop.scale, size)
    return align_arcface(image_bgr, face.landmarks, size[0])
