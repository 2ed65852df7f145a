"""Which face an operation acts on, and which enforced gates it failed."""

from __future__ import annotations

from ufme_ray.orchestration.errors import FaceCutOffError, FaceNotFoundError, MultipleFacesError
from ufme_ray.vision.pipeline import FaceAnalysis, ImageAnalysis, NoFaceError

# A face box may overrun the image by this share of its size before it counts as cut off
# (detectors place boxes a little outside the visible face).
BORDER_MARGIN = 0.05
# A requested box names the detected face it overlaps this much (a box from /api/v1/analyze: ~1).
BOX_MIN_IOU = 0.5


def enforced_failures(face: FaceAnalysis, enforced: list[str]) -> list[str]:
    return [name for name in face.rejected_by if name in enforced]


def iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def single_face(analysis: ImageAnalysis, dominance: float, *, box: list[float] | None = None) -> FaceAnalysis:
    """The one face to enrol: the face at `box` (IoU >= BOX_MIN_IOU), else the dominant one;
    refuses no face, several comparable faces (without a box) and a face cut off."""
    if not analysis.faces:
        raise NoFaceError("no face was found in the image")
    if box is not None:
        overlaps = [(iou(face.box, box), face) for face in analysis.faces]
        best, face = max(overlaps, key=lambda pair: pair[0])
        if best < BOX_MIN_IOU:
            raise FaceNotFoundError(best)
    else:
        faces = sorted(analysis.faces, key=lambda f: f.area, reverse=True)
        if len(faces) > 1 and faces[0].area < dominance * faces[1].area:
            raise MultipleFacesError(
                f"the image holds {len(faces)} faces and none dominates (the largest must be at least "
                f"{dominance}x the area of the next); send a photo of one person, or name the face by its box"
            )
        face = faces[0]
    margin_x = BORDER_MARGIN * (face.box[2] - face.box[0])
    margin_y = BORDER_MARGIN * (face.box[3] - face.box[1])
    if (
        face.box[0] < -margin_x
        or face.box[1] < -margin_y
        or face.box[2] > analysis.width + margin_x
        or face.box[3] > analysis.height + margin_y
    ):
        raise FaceCutOffError()
    return face


def main_face(analysis: ImageAnalysis) -> FaceAnalysis:
    face = analysis.main_face()
    if face is None:
        raise NoFaceError("no face was found in the image")
    return face
