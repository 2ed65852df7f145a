"""The HTTP layer alone maps the domain's refusals to statuses; unexpected errors are 500."""

from __future__ import annotations

import numpy as np
import pytest

from ufme_ray.orchestration import errors as domain
from ufme_ray.serving.api.errors import ApiError, status_for
from ufme_ray.serving.auth import AuthError
from ufme_ray.vision import errors as vision
from ufme_ray.vision.gates import GateResult
from ufme_ray.vision.pipeline import FaceAnalysis, NoFaceError


def refused_face() -> FaceAnalysis:
    return FaceAnalysis(
        box=np.zeros(4, np.float32), landmarks=np.zeros((5, 2), np.float32), detection_score=0.9, quality=0.1,
        liveness=None, morph=None, embedding=np.zeros(4, np.float32),
        gates={"quality": GateResult("fail", 0.1, 0.4, ">=")},
    )


@pytest.mark.parametrize(
    "error, status",
    [
        (domain.GateRejectedError(refused_face(), ["quality"], ["quality"]), 422),
        (domain.DuplicateFaceError("alice", 0.8, 0.45), 409),
        (domain.UnknownSubjectError("alice"), 404),
        (domain.GalleryUnavailableError("shard 1 is restoring"), 503),
        (domain.AuditUnavailableError("storage down"), 503),
        (domain.MultipleFacesError("two faces"), 422),
        (domain.FaceCutOffError(), 422),
        (domain.NoDemoFolderError("no folder"), 422),
        (NoFaceError("no face"), 422),
        (vision.UnsupportedImageError("text"), 415),
        (vision.ImageTooLargeError("big"), 413),
        (vision.CorruptImageError("truncated"), 400),
        (vision.BadExifError("orientation unreadable"), 400),
        (vision.EmptyImageError("empty"), 400),
        (ApiError(415, "unsupported_media_type", "xml"), 415),
        (AuthError(403, "forbidden", "role"), 403),
        (KeyError("bug"), 500),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
def test_status_for(error, status):
    assert status_for(error) == status


def test_a_gate_refusal_names_the_gate_score_and_threshold():
    error = domain.GateRejectedError(refused_face(), ["quality"], ["quality"])
    assert error.code == "quality_gate_failed"
    assert "quality score 0.1000 is below the threshold 0.4" in error.message
