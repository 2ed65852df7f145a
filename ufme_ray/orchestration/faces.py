"""Which face an operation acts on, and which enforced gates it failed."""

from __future__ import annotations

from ufme_ray.orchestration.errors import FaceCutOffError, MultipleFacesError
from ufme_ray.vision.pipeline import FaceAnalysis, ImageAnalysis, NoFaceError

# A face box may overrun the image by this share of its size before it counts as cut off
# (detectors place boxes a little outside the visible face).
BORDER_MARGIN = 0.05


def enforced_failures(face: FaceAnalysis, enforced: list[str]) -> list[str]:
    return [name for name in face.rejected_by if name in enforced]


def single_face(analysis: ImageAnalysis, dominance: float) -> FaceAnalysis:
    """The one face to enrol; refuses no face, several comparable faces and a face cut off."""
    if not analysis.faces:
        raise NoFaceError("no face was found in the image")
    faces = sorted(analysis.faces, key=lambda f: f.area, reverse=True)
    if len(faces) > 1 and faces[0].area < dominance * faces[1].area:
        raise MultipleFacesError(
            f"the image holds {len(faces)} faces and none dominates (the largest must be at least "
            f"{dominance}x the area of the next); send a photo of one person"
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
