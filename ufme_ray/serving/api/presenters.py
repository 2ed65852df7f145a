"""Domain results -> response models (the JSON clients see; embeddings never leave)."""

from __future__ import annotations

from ufme_ray.gallery.galleries import GalleryRecord
from ufme_ray.orchestration import results
from ufme_ray.serving.auth import ROLE_GRANTS, Principal
from ufme_ray.serving.api import schemas
from ufme_ray.vision.gates import ResolvedThresholds
from ufme_ray.vision.pipeline import FaceAnalysis


def face_out(face: FaceAnalysis, enforced: list[str], capture: str) -> schemas.FaceOut:
    return schemas.FaceOut(
        capture=capture,
        box=[float(v) for v in face.box],
        landmarks=[[float(x), float(y)] for x, y in face.landmarks],
        detection_score=face.detection_score,
        quality=face.quality,
        liveness=face.liveness,
        morph=schemas.MorphOut(status="not_configured")
        if face.morph is None
        else schemas.MorphOut(status="scored", score=face.morph),
        gates={
            name: schemas.GateOut(
                status=gate.status, score=gate.score, threshold=gate.threshold, rule=gate.rule, enforced=name in enforced
            )
            for name, gate in face.gates.items()
        },
    )


def gated_out(gated: results.GatedFace) -> schemas.FaceOut:
    return face_out(gated.face, gated.enforced, gated.capture)


def thresholds_out(thresholds: ResolvedThresholds) -> schemas.ThresholdsOut:
    return schemas.ThresholdsOut(**thresholds.as_dict())


def candidate_out(candidate: results.CandidateResult) -> schemas.CandidateOut:
    return schemas.CandidateOut(**vars(candidate))


def enrolment_out(result: results.Enrolled) -> schemas.EnrolOut:
    return schemas.EnrolOut(
        duplicate_of=None if result.duplicate_of is None else candidate_out(result.duplicate_of),
        gallery_id=result.gallery_id,
        subject_id=result.subject_id,
        template_id=result.template_id,
        shard=result.shard,
        face=gated_out(result.face),
        thresholds=thresholds_out(result.thresholds),
    )


def identification_out(result: results.Identification) -> schemas.IdentifyOut:
    return schemas.IdentifyOut(
        galleries=result.galleries,
        faces=[
            schemas.IdentifiedFaceOut(
                face=gated_out(f.face),
                candidates=[candidate_out(c) for c in f.candidates],
                decision=schemas.DecisionOut(**vars(f.decision)),
            )
            for f in result.faces
        ],
        thresholds=thresholds_out(result.thresholds),
    )


def verification_out(result: results.Verification) -> schemas.VerifyOut:
    other = None if result.other_face is None else gated_out(result.other_face)
    return schemas.VerifyOut(**{**vars(result), "face": gated_out(result.face), "other_face": other})


def analysis_out(result: results.Analysis) -> schemas.AnalyzeOut:
    return schemas.AnalyzeOut(
        width=result.width,
        height=result.height,
        faces=[gated_out(f) for f in result.faces],
        thresholds=thresholds_out(result.thresholds),
    )


def subject_out(result: results.SubjectTemplates) -> schemas.SubjectOut:
    return schemas.SubjectOut(
        gallery_id=result.gallery_id,
        subject_id=result.subject_id,
        shard=result.shard,
        templates=[schemas.TemplateOut(**vars(t)) for t in result.templates],
    )


def erasure_out(result: results.Erasure) -> schemas.ErasedOut:
    return schemas.ErasedOut(**vars(result))


def subject_list_out(page: results.SubjectPage, offset: int, limit: int) -> schemas.SubjectListOut:
    return schemas.SubjectListOut(
        gallery_id=page.gallery_id, subject_ids=page.subject_ids, total=page.total, offset=offset, limit=limit
    )


def gallery_summary_out(record: GalleryRecord) -> schemas.GallerySummaryOut:
    return schemas.GallerySummaryOut(
        gallery_id=record.gallery_id, description=record.description, created_at=record.created_at, policy=record.policy
    )


def gallery_info_out(info: results.GalleryInfo) -> schemas.GalleryInfoOut:
    policy = info.policy
    return schemas.GalleryInfoOut(
        **gallery_summary_out(info.record).model_dump(),
        subjects=info.subjects,
        templates=info.templates,
        shards=[schemas.GalleryShardOut(**s) for s in info.shards],
        snapshot_epochs=info.snapshot_epochs,
        thresholds=thresholds_out(policy.thresholds),
        gates=schemas.GatesOut(**policy.gates.model_dump(include={"enrol", "identify", "verify", "demo"})),
        duplicates=policy.duplicates.model_dump(),
    )


def gallery_list_out(records: list[GalleryRecord], total: int, offset: int, limit: int) -> schemas.GalleryListOut:
    return schemas.GalleryListOut(
        galleries=[gallery_summary_out(r) for r in records], total=total, offset=offset, limit=limit
    )


def _shards_out(state: results.GalleryState) -> list[schemas.ShardOut]:
    return [schemas.ShardOut(**{k: v for k, v in s.items() if k in schemas.ShardOut.model_fields}) for s in state.shards]


def gallery_out(state: results.GalleryState) -> schemas.GalleryOut:
    return schemas.GalleryOut(
        ready=state.shards_ready == len(state.shards),
        num_shards=len(state.shards),
        total_templates=state.total_templates,
        snapshot_epochs=state.snapshot_epochs,
        shards=_shards_out(state),
    )


def ready_out(state: results.GalleryState) -> schemas.ReadyOut:
    return schemas.ReadyOut(
        ready=state.ready, shards_ready=state.shards_ready, num_shards=len(state.shards), detail=_shards_out(state)
    )


def demo_load_out(result: results.DemoLoad) -> schemas.DemoLoadOut:
    return schemas.DemoLoadOut(
        folder=result.folder,
        subjects_enrolled=result.subjects_enrolled,
        templates_enrolled=result.templates_enrolled,
        skipped=[schemas.SkippedOut(**vars(s)) for s in result.skipped],
    )


def audit_page_out(records, total: int, offset: int) -> schemas.AuditPageOut:
    return schemas.AuditPageOut(
        total=total, offset=offset, records=[schemas.AuditRecordOut(**r.model_dump()) for r in records]
    )


def key_out(principal: Principal) -> schemas.KeyOut:
    return schemas.KeyOut(
        key_id=principal.key_id,
        role=principal.role,
        grants=sorted(group for group, roles in ROLE_GRANTS.items() if principal.role in roles and group != "self"),
        galleries="*" if principal.galleries is None else sorted(principal.galleries),
        captures="*" if principal.captures is None else list(principal.captures),
        rate=None if principal.rate is None else principal.rate.rate,
        burst=None if principal.rate is None else principal.rate.burst,
    )
