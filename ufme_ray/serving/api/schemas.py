"""Request and response models of /api/v1 (separate In/Out models; embeddings never go out)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageIn(_In):
    image: str = Field(description="The image file, base64-encoded (JPEG, PNG, WebP or BMP).")


class IdentifyIn(ImageIn):
    top_k: int = Field(5, ge=1, le=100, description="Candidates returned per face.")


class VerifyIn(ImageIn):
    subject_id: str | None = Field(None, pattern=SUBJECT_ID_PATTERN, description="Compare against this subject...")
    image2: str | None = Field(None, description="...or against the main face of this second image (base64).")


class DemoLoadIn(_In):
    # min_length: an empty string is no folder (it used to fall through to the default and load it all).
    folder: str | None = Field(
        None, min_length=1, description="Folder of <subject>/<image> photos; default: the configured demo_dir."
    )
    images_per_subject: int = Field(1, ge=1, le=20, description="Photos enrolled per subject at most.")
    subjects: list[str] | None = Field(
        None, max_length=1000, description="Only these subject folders (lets a client load in chunks and show progress)."
    )


class GateOut(BaseModel):
    status: Literal["pass", "fail", "not_configured"]
    score: float | None
    threshold: float | None
    rule: Literal[">=", "<"]
    enforced: bool = Field(description="Whether this operation rejects a face that fails this gate.")


class MorphOut(BaseModel):
    status: Literal["scored", "not_configured"]
    score: float | None = None


class FaceOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in image pixels.")
    landmarks: list[list[float]] = Field(description="Eyes, nose, mouth corners (x, y).")
    detection_score: float
    quality: float | None
    liveness: float | None
    morph: MorphOut
    gates: dict[str, GateOut]


class ThresholdsOut(BaseModel):
    detection_min: float
    similarity_min: float
    quality_min: float | None
    liveness_min: float | None
    morph_max: float | None


class EnrolOut(BaseModel):
    subject_id: str
    template_id: int
    shard: int
    face: FaceOut
    thresholds: ThresholdsOut
    duplicate_of: "CandidateOut | None" = Field(
        None, description="With the 'warn' duplicate policy: the other subject this face matches."
    )


class CandidateOut(BaseModel):
    subject_id: str
    score: float
    template_id: int
    estimated_far: float | None = Field(
        None, description="Estimated false-match rate of this score under the embedder's calibration (None: uncalibrated)."
    )


class DecisionOut(BaseModel):
    status: Literal["match", "unknown", "rejected"]
    subject_id: str | None = None
    score: float | None = None
    reason: str | None = Field(None, description="For 'rejected': the gate(s) the face failed.")


class IdentifiedFaceOut(BaseModel):
    face: FaceOut
    candidates: list[CandidateOut]
    decision: DecisionOut


class IdentifyOut(BaseModel):
    faces: list[IdentifiedFaceOut]
    thresholds: ThresholdsOut


class VerifyOut(BaseModel):
    match: bool
    similarity: float
    threshold: float
    subject_id: str | None = None
    template_id: int | None = Field(None, description="The subject's best-matching template.")
    estimated_far: float | None = Field(None, description="Estimated false-match rate of the similarity (None: uncalibrated).")
    face: FaceOut
    other_face: FaceOut | None = None


class AnalyzeOut(BaseModel):
    width: int
    height: int
    faces: list[FaceOut]
    thresholds: ThresholdsOut


class TemplateOut(BaseModel):
    template_id: int
    quality: float
    enrolled_at: float


class SubjectOut(BaseModel):
    subject_id: str
    shard: int
    templates: list[TemplateOut]


class ErasedOut(BaseModel):
    subject_id: str
    shard: int
    erased_template_ids: list[int]


class ShardOut(BaseModel):
    shard: int
    ready: bool
    error: str | None = None
    live_templates: int | None = None
    snapshot_epoch: int | None = None
    index_kind: str | None = None
    delta_rows: int | None = None
    applied_seq: int | None = None


class GalleryOut(BaseModel):
    ready: bool
    num_shards: int
    total_templates: int
    snapshot_epochs: list[int]
    shards: list[ShardOut]


class SkippedOut(BaseModel):
    file: str
    reason: str


class DemoLoadOut(BaseModel):
    folder: str
    subjects_enrolled: int
    templates_enrolled: int
    skipped: list[SkippedOut]


class ReadyOut(BaseModel):
    ready: bool
    shards_ready: int
    num_shards: int
    detail: list[ShardOut]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict | None = None


class ErrorOut(BaseModel):
    error: ErrorBody


class AuditRecordOut(BaseModel):
    time: float
    request_id: str
    key_id: str
    operation: str
    outcome: str
    subject_ids: list[str]
    decisions: list[dict]
    thresholds: dict[str, float | None]
    gallery_epochs: list[int]
    client: str | None
    detail: str | None
    phase: str = Field(description="intent: written before a change ran; answer: the outcome.")
    count: int = Field(description="How many refusals this record stands for (1 unless aggregated).")
    first_time: float | None = Field(description="For an aggregate, when its first refusal came.")


class AuditPageOut(BaseModel):
    total: int
    offset: int
    records: list[AuditRecordOut]

EnrolOut.model_rebuild()
