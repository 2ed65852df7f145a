"""What the orchestration answers: plain dataclasses, shaped for people by the HTTP layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ufme_ray.gallery.galleries import DEFAULT_GALLERY, GalleryRecord
from ufme_ray.gallery.merge import Candidate
from ufme_ray.vision.gates import ResolvedThresholds
from ufme_ray.vision.pipeline import FaceAnalysis


@dataclass(frozen=True)
class CandidateResult(Candidate):
    """A candidate with the false-match rate its score is estimated at (None: uncalibrated)."""

    estimated_far: float | None = None


@dataclass(frozen=True)
class GatedFace:
    """A face with the gates the operation enforced on it."""

    face: FaceAnalysis
    enforced: list[str]
    capture: str = "live"  # how the photo arrived: decides whether liveness applies


@dataclass(frozen=True)
class Enrolled:
    """The stored template, the face it came from and, under the warn policy, the subject it resembles."""

    subject_id: str
    template_id: int
    shard: int
    face: GatedFace
    thresholds: ResolvedThresholds
    duplicate_of: CandidateResult | None = None
    gallery_id: str = DEFAULT_GALLERY


@dataclass(frozen=True)
class Decision:
    """match: the best candidate reaches the similarity threshold; unknown: none does; rejected: a gate refused the face."""

    status: Literal["match", "unknown", "rejected"]
    subject_id: str | None = None
    score: float | None = None
    reason: str | None = None
    gallery_id: str | None = None


@dataclass(frozen=True)
class IdentifiedFace:
    """One face of an identify request: its gates, ranked candidates and the decision."""

    face: GatedFace
    candidates: list[CandidateResult]
    decision: Decision


@dataclass(frozen=True)
class Identification:
    """Every face of the image, the galleries searched, and the thresholds and gates applied."""

    faces: list[IdentifiedFace]
    thresholds: ResolvedThresholds
    galleries: list[str] = field(default_factory=lambda: [DEFAULT_GALLERY])
    gates: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Verification:
    """1:1 against a subject (its best template) or against the main face of a second image."""

    match: bool
    similarity: float
    threshold: float
    face: GatedFace
    estimated_far: float | None
    subject_id: str | None = None
    template_id: int | None = None
    other_face: GatedFace | None = None
    gallery_id: str | None = None


@dataclass(frozen=True)
class Analysis:
    """Every face with its scores; nothing enforced, nothing searched."""

    width: int
    height: int
    faces: list[GatedFace]
    thresholds: ResolvedThresholds


@dataclass(frozen=True)
class Template:
    """One stored template of a subject (never its vector)."""

    template_id: int
    quality: float
    enrolled_at: float


@dataclass(frozen=True)
class SubjectTemplates:
    """A subject's templates and the shard that owns them."""

    subject_id: str
    shard: int
    templates: list[Template]
    gallery_id: str = DEFAULT_GALLERY


@dataclass(frozen=True)
class Erasure:
    """What a delete erased: every template of the subject on its shard."""

    subject_id: str
    shard: int
    erased_template_ids: list[int]
    gallery_id: str = DEFAULT_GALLERY


@dataclass(frozen=True)
class SubjectPage:
    """A page of a gallery's subject ids, in order, and how many it holds."""

    gallery_id: str
    subject_ids: list[str]
    total: int


@dataclass(frozen=True)
class GalleryInfo:
    """A gallery: its record, per-shard counts, the snapshot epochs serving it, the policy in force."""

    record: GalleryRecord
    shards: list[dict]  # {shard, subjects, templates}
    snapshot_epochs: list[int]
    policy: object  # engine.LivePolicy (not imported: the engine imports this module)

    @property
    def subjects(self) -> int:
        return sum(s["subjects"] for s in self.shards)

    @property
    def templates(self) -> int:
        return sum(s["templates"] for s in self.shards)


@dataclass(frozen=True)
class GalleryState:
    """Per-shard status dicts as the shards report them (readiness, counts, epoch)."""

    shards: list[dict]
    stages_up: bool = True

    @property
    def shards_ready(self) -> int:
        return sum(bool(s.get("ready")) for s in self.shards)

    @property
    def ready(self) -> bool:
        return self.stages_up and self.shards_ready == len(self.shards)

    @property
    def total_templates(self) -> int:
        return sum(s.get("live_templates") or 0 for s in self.shards)

    @property
    def snapshot_epochs(self) -> list[int]:
        return sorted({s["snapshot_epoch"] for s in self.shards if s.get("snapshot_epoch") is not None})


@dataclass(frozen=True)
class Skipped:
    """A demo photo (or folder) that was not enrolled, and the refusal code."""

    file: str
    reason: str


@dataclass(frozen=True)
class DemoLoad:
    """What a demo load enrolled, and each file it skipped with the reason."""

    folder: str
    subjects_enrolled: int
    templates_enrolled: int
    skipped: list[Skipped]
