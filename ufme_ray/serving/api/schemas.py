"""Request and response models of /api/v1 (separate In/Out models; embeddings never go out)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ufme_ray.config import Capture, QualityFilter
from ufme_ray.execution_providers import StageName
from ufme_ray.gallery.galleries import DEFAULT_GALLERY, GALLERY_ID_PATTERN
from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN
from ufme_ray.orchestration.compactions import LastCompaction

GalleryIdStr = Annotated[str, Field(pattern=GALLERY_ID_PATTERN)]
MAX_GALLERIES_PER_SEARCH = 100


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageIn(_In):
    image: str = Field(description="The image file, base64-encoded (JPEG, PNG, WebP or BMP).")
    capture: Capture | None = Field(
        None,
        description="live: taken now by a camera the operator controls (liveness enforced); stored: a file such as "
        "an ID or badge photo (liveness not applicable; quality and morph enforced). Default: the gallery's "
        "policy (gates.capture), or the one capture type the key may declare.",
    )
    quality_filter: QualityFilter | None = Field(
        None,
        description="Refuse faces below this quality (thresholds per quality model, in the model manifest); "
        "stricter than the gallery's quality threshold, never laxer. none: the gallery's threshold.",
    )


class EnrolIn(ImageIn):
    box: list[float] | None = Field(
        None, min_length=4, max_length=4,
        description="x1, y1, x2, y2 of the face to enrol, as /api/v1/analyze returns it (multipart: comma-separated); "
        "the detected face overlapping it most (IoU >= 0.5) is enrolled. Without it, the dominant face.",
    )

    @field_validator("box", mode="before")
    @classmethod
    def _comma_separated_box(cls, value):
        return value.split(",") if isinstance(value, str) else value

    @field_validator("box")
    @classmethod
    def _a_box(cls, value):
        if value is not None and not (all(math.isfinite(v) for v in value) and value[2] > value[0] and value[3] > value[1]):
            raise ValueError("box must be finite x1, y1, x2, y2 with x2 > x1 and y2 > y1")
        return value


class IdentifyIn(ImageIn):
    top_k: int = Field(5, ge=1, le=100, description="Candidates returned per face.")
    galleries: list[GalleryIdStr] | None = Field(
        None, min_length=1, max_length=MAX_GALLERIES_PER_SEARCH,
        description=f"Search these galleries at once (multipart: comma-separated); default: '{DEFAULT_GALLERY}', "
        "or the gallery in the path. Each candidate names its gallery; the strictest of their policies applies.",
    )

    @field_validator("galleries", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        return value.split(",") if isinstance(value, str) else value


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
    gallery_id: GalleryIdStr = Field(DEFAULT_GALLERY, description="The gallery to enrol into.")


class GateOut(BaseModel):
    status: Literal["pass", "fail", "not_configured", "not_applicable"] = Field(
        description="not_applicable: scored, but not what this photo can be judged on (liveness of a stored photo)."
    )
    score: float | None
    threshold: float | None
    rule: Literal[">=", "<"]
    enforced: bool = Field(description="Whether this operation rejects a face that fails this gate.")


class MorphOut(BaseModel):
    status: Literal["scored", "not_configured"]
    score: float | None = None


class FaceOut(BaseModel):
    capture: Literal["live", "stored"] = Field(description="How the photo arrived: it decides whether liveness applies.")
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
    gallery_id: str
    subject_id: str
    template_id: int
    shard: int
    face: FaceOut
    thresholds: ThresholdsOut
    duplicate_of: "CandidateOut | None" = Field(
        None, description="With the 'warn' duplicate policy: the other subject this face matches."
    )


class CandidateOut(BaseModel):
    gallery_id: str
    subject_id: str
    score: float
    template_id: int
    estimated_far: float | None = Field(
        None, description="Estimated false-match rate of this score under the embedder's calibration (None: uncalibrated)."
    )


class DecisionOut(BaseModel):
    status: Literal["match", "unknown", "rejected"]
    gallery_id: str | None = None
    subject_id: str | None = None
    score: float | None = None
    reason: str | None = Field(None, description="For 'rejected': the gate(s) the face failed.")


class IdentifiedFaceOut(BaseModel):
    face: FaceOut
    candidates: list[CandidateOut]
    decision: DecisionOut


class IdentifyOut(BaseModel):
    galleries: list[str] = Field(description="The galleries searched.")
    faces: list[IdentifiedFaceOut]
    thresholds: ThresholdsOut


class VerifyOut(BaseModel):
    match: bool
    similarity: float
    threshold: float
    gallery_id: str | None = None
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
    gallery_id: str
    subject_id: str
    shard: int
    templates: list[TemplateOut]


class SubjectListOut(BaseModel):
    gallery_id: str
    subject_ids: list[str]
    total: int
    offset: int
    limit: int


class ErasedOut(BaseModel):
    gallery_id: str
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
    role: Literal["writer", "follower", "handed_over"] | None = Field(
        None,
        description="writer: holds the log's writer claim; follower: restored, takes the claim with its first "
        "request; handed_over: a newer deployment took the claim, so this one answers reads and refuses changes (503)",
    )


class GalleryOut(BaseModel):
    ready: bool
    num_shards: int
    total_templates: int
    snapshot_epochs: list[int]
    shards: list[ShardOut]


class GalleryIn(_In):
    gallery_id: GalleryIdStr = Field(description="Same rules as subject ids.")
    description: str = Field("", max_length=1000)
    policy: dict = Field(
        default_factory=dict,
        description="Thresholds, gates and duplicate policy for this gallery, laid over the engine's "
        '(same fields as the Gateway\'s user_config, e.g. {"thresholds": {"similarity_min": 0.5}}).',
    )


class GalleryPatchIn(_In):
    description: str | None = Field(None, max_length=1000)
    policy: dict | None = Field(None, description="Replaces the gallery's policy whole; {} drops it.")


class GalleryShardOut(BaseModel):
    shard: int
    subjects: int
    templates: int


class GatesOut(BaseModel):
    enrol: list[str]
    identify: list[str]
    verify: list[str]
    demo: list[str]


class GallerySummaryOut(BaseModel):
    gallery_id: str
    description: str
    created_at: float
    policy: dict = Field(description="This gallery's own settings, laid over the engine's.")


class GalleryInfoOut(GallerySummaryOut):
    subjects: int
    templates: int
    shards: list[GalleryShardOut]
    snapshot_epochs: list[int]
    thresholds: ThresholdsOut = Field(description="In force for this gallery (the engine's, with its policy over them).")
    gates: GatesOut
    duplicates: dict


class GalleryListOut(BaseModel):
    galleries: list[GallerySummaryOut]
    total: int
    offset: int
    limit: int


class GalleryErasedOut(BaseModel):
    gallery_id: str
    templates_erased: int


class ImportOut(BaseModel):
    import_id: str
    gallery_id: str
    source: str
    capture: str
    state: Literal["running", "done", "failed"]
    total: int
    done: int = Field(description="Photos with an outcome so far.")
    counts: dict[str, int] = Field(description="Photos per outcome: enrolled, refused, duplicate, no_face, ...")
    started_at: float
    finished_at: float | None
    report: str | None = Field(description="Object key of the per-photo Parquet report, once written.")
    error: str | None


class ImportListOut(BaseModel):
    imports: list[ImportOut] = Field(description="Newest first.")
    total: int
    offset: int
    limit: int


class StageOut(BaseModel):
    stage: StageName
    models: dict[str, list[str]] = Field(
        description="Model name -> the onnxruntime execution providers its session got, most preferred first "
        "(CPUExecutionProvider alone: it runs on CPU); empty for a stage with no model configured."
    )


class StagesOut(BaseModel):
    stages: list[StageOut] = Field(description="Every pipeline stage, as one of its replicas reports it.")


class CompactionOut(BaseModel):
    last: LastCompaction | None = Field(description="The last compaction run, or None if none has run on this storage.")


class KeyOut(BaseModel):
    key_id: str
    role: Literal["admin", "enrol", "search"]
    grants: list[str] = Field(description="The operation groups the role may call: admin, enrol, search.")
    galleries: list[str] | Literal["*"] = Field(description="The galleries the key may use; '*': every gallery.")
    captures: list[Capture] | Literal["*"] = Field(description="The capture types the key may declare; '*': any.")
    rate: float | None = Field(description="Requests a second on average (None: no quota).")
    burst: int | None


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
    galleries: list[str]
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
