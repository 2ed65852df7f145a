"""Detection on real photos with YuNet and SCRFD (the `detector` fixture runs each test on both)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ufme_ray.config import DetectionSettings, ImageLimits
from ufme_ray.models.manifest import packaged_manifest
from ufme_ray.vision.detector import DetectedFace, FaceDetector, letterbox, non_max_suppression
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.onnx_model import load_session

LIMITS = ImageLimits()


def plausible(face: DetectedFace) -> bool:
    """Eyes above the mouth, left features left of right ones, every point in (or near) the box."""
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    x1, y1, x2, y2 = face.box
    margin = 0.2 * face.width  # faces cut by the image border extrapolate their landmarks
    inside = all(x1 - margin <= x <= x2 + margin and y1 - margin <= y <= y2 + margin for x, y in face.landmarks)
    return (
        inside
        and left_eye[0] < right_eye[0]
        and left_mouth[0] < right_mouth[0]
        and (left_eye[1] + right_eye[1]) / 2 < (left_mouth[1] + right_mouth[1]) / 2
    )


@pytest.mark.parametrize("photo, expected", [("couple.jpg", 2), ("selfie-many-people.jpg", 6)])
def test_group_photos(detector, faces_dir: Path, photo: str, expected: int):
    faces = detector.detect(read_image_file(str(faces_dir / "deepface/_multi_face" / photo), LIMITS).bgr)
    assert len(faces) == expected
    assert all(plausible(face) for face in faces)


def test_every_labelled_photo_has_its_face(detector, decoded_photos):
    """Each of the 404 single-identity photos yields a face with a plausible 5-point layout.

    Many LFW and deepface photos also show bystanders (real faces that both detectors find, e.g.
    Susan_Sarandon_0001 is a two-shot), so "exactly one face" is not true of this data; the photo's
    subject is the centred face (ImageAnalysis.main_face).
    """
    assert len(decoded_photos) == 404
    missing, implausible = [], []
    for path, image in decoded_photos:
        faces = detector.detect(image)
        if not faces:
            missing.append(path.name)
            continue
        height, width = image.shape[:2]
        centred = [f for f in faces if f.box[0] <= width / 2 <= f.box[2] and f.box[1] <= height / 2 <= f.box[3]]
        if not plausible(max(centred or faces, key=lambda f: f.width * f.height)):
            implausible.append(path.name)
    assert missing == []
    assert len(implausible) <= 2, implausible


def test_pad_samples_have_exactly_one_face(detector, faces_dir: Path):
    for path in sorted(faces_dir.glob("pad/*/*.jpg")):
        assert len(detector.detect(read_image_file(str(path), LIMITS).bgr)) == 1, path


def test_boxes_map_back_to_original_pixels(detector, faces_dir: Path):
    """The same photo at 1x and 3x (letterboxed differently) gives the same face, scaled 3x."""
    image = read_image_file(str(faces_dir / "pad/live/silentface_image_T1.jpg"), LIMITS).bgr
    small = detector.detect(image)[0]
    large = detector.detect(cv2.resize(image, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))[0]
    assert np.allclose(large.box / 3, small.box, atol=0.03 * small.width)
    assert np.allclose(large.landmarks / 3, small.landmarks, atol=0.03 * small.width)


def test_yunet_and_scrfd_agree(settings, faces_dir: Path):
    """Two independent decoders on the same photos: boxes overlap and landmarks nearly coincide."""
    from ufme_ray.models.manifest import packaged_manifest
    from ufme_ray.vision.detector import FaceDetector
    from ufme_ray.vision.onnx_model import load_session

    def make(name):
        spec = packaged_manifest().get(name)
        return FaceDetector(spec, load_session(settings.model_dir, spec, settings.runtime), settings.detection, spec.default_threshold)

    yunet, scrfd = make("yunet_2023mar"), make("scrfd_500m")
    gaps = []
    for path in sorted(faces_dir.glob("deepface/id0*/*.jpg"))[:15]:
        image = read_image_file(str(path), LIMITS).bgr
        a, b = yunet.detect(image)[0], scrfd.detect(image)[0]
        gaps.append(np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() / a.width)
    assert np.median(gaps) < 0.05


def test_no_face_in_a_blank_image(detector):
    assert detector.detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_min_face_size(settings, faces_dir: Path):
    from ufme_ray.config import DetectionSettings
    from ufme_ray.vision.detector import FaceDetector

    image = read_image_file(str(faces_dir / "deepface/_multi_face/selfie-many-people.jpg"), LIMITS).bgr
    from ufme_ray.models.manifest import packaged_manifest
    from ufme_ray.vision.onnx_model import load_session

    spec = packaged_manifest().get("yunet_2023mar")
    session = load_session(settings.model_dir, spec, settings.runtime)
    all_faces = FaceDetector(spec, session, DetectionSettings(min_face_px=1), 0.6).detect(image)
    cutoff = sorted(min(f.width, f.height) for f in all_faces)[2] + 1
    big = FaceDetector(spec, session, DetectionSettings(min_face_px=int(cutoff)), 0.6).detect(image)
    assert len(big) == len(all_faces) - 3
    assert all(min(f.width, f.height) >= cutoff for f in big)


def test_letterbox_keeps_aspect_and_pads():
    canvas, scale = letterbox(np.full((100, 200, 3), 255, np.uint8), (640, 640))
    assert scale == pytest.approx(3.2)
    assert canvas[:320].min() == 255 and canvas[321:].max() == 0


@pytest.mark.parametrize(("height", "width", "canvas_shape"), [(100, 200, (320, 640)), (188, 250, (512, 640)), (250, 250, (640, 640))])
def test_letterbox_fit_cuts_the_canvas_to_the_image_at_the_same_scale(height, width, canvas_shape):
    image = np.full((height, width, 3), 255, np.uint8)
    fitted, scale = letterbox(image, (640, 640), fit=True)
    full, full_scale = letterbox(image, (640, 640))
    assert fitted.shape[:2] == canvas_shape and scale == full_scale
    assert np.array_equal(fitted, full[: canvas_shape[0], : canvas_shape[1]])


class RecordingSession:
    """The session, noting the shape of every input it is fed."""

    def __init__(self, session):
        self.session, self.shapes = session, []

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, outputs, feeds):
        self.shapes.append(next(iter(feeds.values())).shape)
        return self.session.run(outputs, feeds)


def yunet(settings, input_size: str, *, dynamic_size: bool) -> FaceDetector:
    spec = packaged_manifest().get("yunet_2023mar")
    session = RecordingSession(load_session(settings.model_dir, spec, settings.runtime, dynamic_size=dynamic_size))
    return FaceDetector(spec, session, DetectionSettings(input_size=input_size), spec.default_threshold)


def test_fit_runs_a_smaller_frame_and_finds_the_same_faces(settings, faces_dir: Path):
    """A 4:3 crop of a photo: 640x480 instead of 640x640, the same faces. Faces away from the
    bottom edge match to 1% of their width; one cut by it moves a little more (there the network
    sees the frame's edge, not rows of zero padding)."""
    photo = read_image_file(str(faces_dir / "deepface/_multi_face/selfie-many-people.jpg"), LIMITS).bgr
    height, width = photo.shape[:2]
    image = photo[:, : height * 4 // 3] if width * 3 > height * 4 else photo[: width * 3 // 4]
    fit, model = yunet(settings, "fit", dynamic_size=True), yunet(settings, "model", dynamic_size=False)
    fitted, letterboxed = fit.detect(image), model.detect(image)
    assert fit.session.shapes == [(1, 3, 480, 640)] and model.session.shapes == [(1, 3, 640, 640)]
    assert len(fitted) == len(letterboxed) >= 4
    for a, b in zip(fitted, letterboxed):
        inside = b.box[3] < image.shape[0] - 0.1 * b.height
        tolerance = (0.01 if inside else 0.05) * b.width
        assert np.allclose(a.box, b.box, atol=tolerance) and np.allclose(a.landmarks, b.landmarks, atol=tolerance)


def test_a_detector_whose_input_is_fixed_runs_at_its_size_even_with_fit(settings, faces_dir: Path):
    detector = yunet(settings, "fit", dynamic_size=False)
    assert not detector.fits_images
    assert len(detector.detect(np.full((480, 640, 3), 127, np.uint8))) == 0
    assert detector.session.shapes == [(1, 3, 640, 640)]


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = non_max_suppression(boxes, np.array([0.8, 0.9, 0.7], np.float32), 0.4)
    assert sorted(keep.tolist()) == [1, 2]
