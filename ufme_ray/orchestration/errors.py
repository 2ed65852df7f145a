"""Typed refusals of the orchestration; the HTTP layer maps each class to a status code."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal with a stable machine-readable `code` and a message for people."""

    code = "refused"

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details


class MultipleFacesError(DomainError, code="multiple_faces"):
    """Several comparable faces: enrolment cannot tell whom the photo is of."""


class FaceNotFoundError(DomainError, code="face_not_found"):
    """No detected face overlaps the requested box enough (IoU >= 0.5)."""

    def __init__(self, best_iou: float) -> None:
        super().__init__(f"no face overlaps the given box with IoU >= 0.5 (best {best_iou:.2f}); take the box from /api/v1/analyze")


class QualityFilterUnavailableError(DomainError, code="quality_filter_unavailable"):
    """The configured quality model ships no threshold for the requested filter."""


class FaceCutOffError(DomainError, code="face_cut_off"):
    """The face to enrol is cut by the image border: its template would be of part of a face."""

    def __init__(self) -> None:
        super().__init__("the face is cut by the image border; send a photo showing the whole face")


class GateRejectedError(DomainError):
    """The face failed an enforced gate; `face` and `enforced` let the answer show every score."""

    def __init__(self, face, enforced: list[str], failed: list[str], capture: str = "live"):
        first = face.gates[failed[0]]
        comparison = "is below" if first.rule == ">=" else "is not below"
        super().__init__(
            f"the face failed the {', '.join(failed)} gate: {failed[0]} score {first.score:.4f} "
            f"{comparison} the threshold {first.threshold}"
        )
        self.code = f"{failed[0]}_gate_failed"
        self.face, self.enforced, self.failed, self.capture = face, enforced, failed, capture


class DuplicateFaceError(DomainError, code="duplicate_face"):
    """The face already matches another subject of the gallery (the 'reject' duplicate policy)."""

    def __init__(self, subject_id: str | None, score: float | None, threshold: float):
        if subject_id is None:
            message, details = "this face matches another subject of the gallery; it is not enrolled", None
        else:
            message = (
                f"this face matches subject {subject_id!r} (score {score:.4f} >= {threshold}); "
                "it is not enrolled under another subject"
            )
            details = {"subject_id": subject_id, "score": score}
        super().__init__(message, {**(details or {}), "threshold": threshold})

    def redacted(self) -> "DuplicateFaceError":
        """The same refusal without the other subject and score, for a caller who may not search
        the gallery (else enrolling photos would tell them who is in it)."""
        return DuplicateFaceError(None, None, self.details["threshold"])


class UnknownGalleryError(DomainError, code="unknown_gallery"):
    def __init__(self, gallery_id: str):
        super().__init__(f"gallery {gallery_id!r} does not exist")


class GalleryConflictError(DomainError):
    """A gallery change the registry refuses: it exists, the engine holds its limit, or it is `default`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class InvalidGalleryPolicyError(DomainError, code="invalid_policy"):
    """A gallery's policy is not a valid partial live config (thresholds, gates, duplicates)."""


class UnknownSubjectError(DomainError, code="unknown_subject"):
    def __init__(self, subject_id: str):
        super().__init__(f"subject {subject_id!r} is not enrolled")


class GalleryUnavailableError(DomainError, code="not_ready"):
    """A shard is restoring, restarting or failed: the answer would be incomplete."""


class AuditUnavailableError(DomainError, code="audit_unavailable"):
    """The audit record of a request cannot be written, so the request does not go through."""


class NoDemoFolderError(DomainError, code="no_demo_folder"):
    """The demo folder is not given, not configured or not a folder on the gateway's machine."""


class IdempotencyKeyReusedError(DomainError, code="idempotency_key_reused"):
    """The Idempotency-Key was acknowledged before for another request (other subject or image)."""

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was used before for a different request (another subject or image); "
            "use a new key for a new request"
        )
