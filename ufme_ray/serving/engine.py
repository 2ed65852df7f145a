"""Request orchestration: decode, detect, crop, score every stage concurrently, gate, search.

`Engine` holds the stage handles and the live configuration; the FastAPI routers call it. It is
the only place that knows the order of the stages.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ufme_ray.audit import AuditRecord, AuditWriter, SubjectPseudonyms, read_records
from ufme_ray.config import GatePolicy, LiveConfig, UfmeSettings
from ufme_ray.gallery.merge import Candidate
from ufme_ray.gallery.routing import shard_for
from ufme_ray.gallery.encryption import open_configured_storage
from ufme_ray.serving.api import schemas
from ufme_ray.serving.api.errors import ApiError, not_found
from ufme_ray.serving.auth import KeyStore
from ufme_ray.serving.metrics import ServiceMetrics
from ufme_ray.serving.searcher import GalleryUnavailableError
from ufme_ray.vision.errors import ImageError
from ufme_ray.vision.gates import ResolvedThresholds
from ufme_ray.vision.image import decode_image
from ufme_ray.vision.pipeline import FaceAnalysis, ImageAnalysis, assemble_faces, cosine_similarity
from ufme_ray.vision.registry import ModelSpecs
from ufme_ray.vision.stages import embedder_crop, model_crop, quality_crop

logger = logging.getLogger(__name__)

DEMO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class StageHandles:
    detector: object
    quality: object
    liveness: object
    morph: object
    embedder: object
    searcher: object


def face_out(face: FaceAnalysis, enforced: list[str]) -> schemas.FaceOut:
    return schemas.FaceOut(
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


def enforced_failures(face: FaceAnalysis, enforced: list[str]) -> list[str]:
    return [name for name in face.rejected_by if name in enforced]


class Engine:
    def __init__(self, settings: UfmeSettings, handles: StageHandles, metrics: ServiceMetrics):
        self.settings = settings
        self.specs = ModelSpecs.from_settings(settings)
        self.handles = handles
        self.metrics = metrics
        self.keys = KeyStore(settings.auth)
        self.calibration = self.specs.embedder.calibration
        self._store = open_configured_storage(settings)
        self._audit = AuditWriter(self._store)
        self._pseudonyms = SubjectPseudonyms.from_settings(settings.audit)
        self._epochs: tuple[float, list[int]] = (0.0, [])
        self.apply_live_config(LiveConfig(thresholds=settings.thresholds, gates=settings.gates, duplicates=settings.duplicates))

    def apply_live_config(self, config: LiveConfig) -> None:
        """Swap thresholds and policies atomically (one attribute assignment each request reads)."""
        thresholds = self.specs.thresholds(self.settings.model_copy(update={"thresholds": config.thresholds}))
        self.live = (config.gates, thresholds)
        self.duplicates = config.duplicates

    def estimated_far(self, score: float | None) -> float | None:
        if self.calibration is None or score is None:
            return None
        return self.calibration.estimated_far(score)

    def candidate_out(self, candidate: Candidate) -> schemas.CandidateOut:
        return schemas.CandidateOut(**vars(candidate), estimated_far=self.estimated_far(candidate.score))

    # --- audit ----------------------------------------------------------------------------------

    async def gallery_epochs(self) -> list[int]:
        """Snapshot epochs in force (refreshed at most every 10 s; audit records carry them)."""
        fetched_at, epochs = self._epochs
        if time.monotonic() - fetched_at > 10:
            statuses = await self.handles.searcher.status.remote()
            epochs = sorted({s["snapshot_epoch"] for s in statuses if s.get("snapshot_epoch") is not None})
            self._epochs = (time.monotonic(), epochs)
        return epochs

    async def audit(self, record: AuditRecord) -> None:
        """Append durably; a failure to audit fails the request (503), never passes silently."""
        try:
            record = record.model_copy(update={"gallery_epochs": await self.gallery_epochs()})
        except GalleryUnavailableError:
            pass  # the record still goes in, without epochs: the gallery is what is unavailable
        try:
            await self._audit.record(self._pseudonyms.record(record))
        except Exception as exc:
            logger.exception("audit write failed")
            raise ApiError(503, "audit_unavailable", f"the audit trail cannot be written: {type(exc).__name__}") from exc

    async def audit_page(self, **filters) -> schemas.AuditPageOut:
        if filters.get("subject_id") is not None:
            filters["subject_id"] = self._pseudonyms(filters["subject_id"])
        records, total = await asyncio.to_thread(read_records, self._store, **filters)
        return schemas.AuditPageOut(
            total=total, offset=filters["offset"], records=[schemas.AuditRecordOut(**r.model_dump()) for r in records]
        )

    @property
    def gates(self) -> GatePolicy:
        return self.live[0]

    @property
    def thresholds(self) -> ResolvedThresholds:
        return self.live[1]

    def thresholds_out(self, thresholds: ResolvedThresholds) -> schemas.ThresholdsOut:
        return schemas.ThresholdsOut(**thresholds.as_dict())

    # --- the pipeline ---------------------------------------------------------------------------

    async def analyze(self, data: bytes, thresholds: ResolvedThresholds) -> ImageAnalysis:
        """Decode (typed 4xx errors), detect, then score every face on every stage concurrently."""
        image = await asyncio.to_thread(decode_image, data, self.settings.image)
        faces = await self.handles.detector.detect.remote(image.bgr)
        self.metrics.faces_per_image.observe(len(faces))
        if not faces:
            return ImageAnalysis(image.width, image.height, image.format, [])
        crops = await asyncio.to_thread(self._crops, image.bgr, faces)
        quality, liveness, morph, embeddings = await asyncio.gather(
            self.handles.quality.score.remote(crops["quality"]),
            self.handles.liveness.score.remote(crops["liveness"]),
            self.handles.morph.score.remote(crops["morph"]),
            self.handles.embedder.embed.remote(crops["embedder"]),
        )
        analyses = assemble_faces(faces, quality, liveness, morph, embeddings, thresholds)
        return ImageAnalysis(image.width, image.height, image.format, analyses)

    def _crops(self, image_bgr: np.ndarray, faces) -> dict[str, list]:
        specs = self.specs
        return {
            "quality": [quality_crop(specs.quality, image_bgr, f) for f in faces] if specs.quality else [],
            "liveness": [[model_crop(spec, image_bgr, f) for spec in specs.liveness] for f in faces]
            if specs.liveness
            else [],
            "morph": [model_crop(specs.morph, image_bgr, f) for f in faces] if specs.morph else [],
            "embedder": [embedder_crop(specs.embedder, image_bgr, f) for f in faces],
        }

    def _reject_if_gated(self, operation: str, face: FaceAnalysis, enforced: list[str], thresholds) -> None:
        failed = enforced_failures(face, enforced)
        for gate in failed:
            self.metrics.gate_rejections.inc(tags={"gate": gate, "operation": operation})
        if failed:
            first = face.gates[failed[0]]
            raise ApiError(
                422,
                f"{failed[0]}_gate_failed",
                f"the face failed the {', '.join(failed)} gate: {failed[0]} score {first.score:.4f} "
                f"{'is below' if first.rule == '>=' else 'is not below'} the threshold {first.threshold}",
                {"face": face_out(face, enforced).model_dump(), "failed_gates": failed},
            )

    def _single_face(self, analysis: ImageAnalysis, dominance: float) -> FaceAnalysis:
        """The one face to enrol; refuses no face and several comparable faces."""
        if not analysis.faces:
            raise ApiError(422, "no_face", "no face was found in the image")
        faces = sorted(analysis.faces, key=lambda f: f.area, reverse=True)
        if len(faces) > 1:
            if faces[0].area < dominance * faces[1].area:
                raise ApiError(
                    422,
                    "multiple_faces",
                    f"the image holds {len(faces)} faces and none dominates (the largest must be at least "
                    f"{dominance}x the area of the next); send a photo of one person",
                )
        face = faces[0]
        width, height = face.box[2] - face.box[0], face.box[3] - face.box[1]
        margin_x, margin_y = 0.05 * width, 0.05 * height
        if (
            face.box[0] < -margin_x
            or face.box[1] < -margin_y
            or face.box[2] > analysis.width + margin_x
            or face.box[3] > analysis.height + margin_y
        ):
            raise ApiError(422, "face_cut_off", "the face is cut by the image border; send a photo showing the whole face")
        return face

    # --- operations -----------------------------------------------------------------------------

    async def enrol(self, subject_id: str, data: bytes, *, operation: str = "enrol") -> schemas.EnrolOut:
        gates, thresholds = self.live
        enforced = gates.demo if operation == "demo" else gates.enrol
        analysis = await self.analyze(data, thresholds)
        face = self._single_face(analysis, gates.enrol_dominance_ratio)
        self._reject_if_gated(operation, face, enforced, thresholds)
        duplicate = await self._duplicate_of(subject_id, face, thresholds)
        quality = face.quality if face.quality is not None else 1.0
        stored = await self.handles.searcher.enrol.remote(subject_id, face.embedding, quality)
        return schemas.EnrolOut(
            duplicate_of=duplicate,
            subject_id=subject_id,
            template_id=stored["template_id"],
            shard=stored["shard"],
            face=face_out(face, enforced),
            thresholds=self.thresholds_out(thresholds),
        )

    async def _duplicate_of(self, subject_id: str, face: FaceAnalysis, thresholds) -> schemas.CandidateOut | None:
        """Another subject this face already matches; 409 under the 'reject' policy."""
        policy = self.duplicates
        if policy.action == "allow":
            return None
        threshold = policy.threshold if policy.threshold is not None else thresholds.similarity_min
        [candidates] = await self.handles.searcher.search.remote(face.embedding[None, :], 3)
        other = next((c for c in candidates if c.subject_id != subject_id and c.score >= threshold), None)
        if other is None:
            return None
        if policy.action == "reject":
            raise ApiError(
                409,
                "duplicate_face",
                f"this face matches subject {other.subject_id!r} (score {other.score:.4f} >= {threshold}); "
                "it is not enrolled under another subject",
                {"subject_id": other.subject_id, "score": other.score, "threshold": threshold},
            )
        return self.candidate_out(other)

    async def identify(self, data: bytes, top_k: int) -> schemas.IdentifyOut:
        gates, thresholds = self.live
        analysis = await self.analyze(data, thresholds)
        searchable = [f for f in analysis.faces if not enforced_failures(f, gates.identify)]
        queries = np.stack([f.embedding for f in searchable]) if searchable else np.zeros((0, 1), np.float32)
        found = iter(await self.handles.searcher.search.remote(queries, top_k) if searchable else [])
        results = []
        for face in analysis.faces:
            failed = enforced_failures(face, gates.identify)
            if failed:
                for gate in failed:
                    self.metrics.gate_rejections.inc(tags={"gate": gate, "operation": "identify"})
                decision = schemas.DecisionOut(status="rejected", reason=f"failed gate(s): {', '.join(failed)}")
                candidates: list[Candidate] = []
            else:
                candidates = next(found)
                best = candidates[0] if candidates else None
                if best is not None and best.score >= thresholds.similarity_min:
                    decision = schemas.DecisionOut(status="match", subject_id=best.subject_id, score=best.score)
                else:
                    decision = schemas.DecisionOut(status="unknown", score=None if best is None else best.score)
            results.append(
                schemas.IdentifiedFaceOut(
                    face=face_out(face, gates.identify),
                    candidates=[self.candidate_out(c) for c in candidates],
                    decision=decision,
                )
            )
        return schemas.IdentifyOut(faces=results, thresholds=self.thresholds_out(thresholds))

    async def _probe_face(self, data: bytes, gates: GatePolicy, thresholds) -> FaceAnalysis:
        analysis = await self.analyze(data, thresholds)
        face = analysis.main_face()
        if face is None:
            raise ApiError(422, "no_face", "no face was found in the image")
        self._reject_if_gated("verify", face, gates.verify, thresholds)
        return face

    async def verify_subject(self, data: bytes, subject_id: str) -> schemas.VerifyOut:
        gates, thresholds = self.live
        face = await self._probe_face(data, gates, thresholds)
        [scores] = await self.handles.searcher.subject_scores.remote(subject_id, face.embedding[None, :])
        if not scores:
            raise not_found(subject_id)
        template_id, similarity = max(scores, key=lambda pair: pair[1])
        return schemas.VerifyOut(
            match=similarity >= thresholds.similarity_min,
            similarity=similarity,
            threshold=thresholds.similarity_min,
            subject_id=subject_id,
            template_id=template_id,
            estimated_far=self.estimated_far(similarity),
            face=face_out(face, gates.verify),
        )

    async def verify_images(self, first: bytes, second: bytes) -> schemas.VerifyOut:
        gates, thresholds = self.live
        face, other = await asyncio.gather(
            self._probe_face(first, gates, thresholds), self._probe_face(second, gates, thresholds)
        )
        similarity = cosine_similarity(face.embedding, other.embedding)
        return schemas.VerifyOut(
            match=similarity >= thresholds.similarity_min,
            similarity=similarity,
            threshold=thresholds.similarity_min,
            estimated_far=self.estimated_far(similarity),
            face=face_out(face, gates.verify),
            other_face=face_out(other, gates.verify),
        )

    async def analyze_out(self, data: bytes) -> schemas.AnalyzeOut:
        _, thresholds = self.live
        analysis = await self.analyze(data, thresholds)
        return schemas.AnalyzeOut(
            width=analysis.width,
            height=analysis.height,
            faces=[face_out(f, []) for f in analysis.faces],
            thresholds=self.thresholds_out(thresholds),
        )

    async def subject(self, subject_id: str) -> schemas.SubjectOut:
        templates = await self.handles.searcher.templates.remote(subject_id)
        if not templates:
            raise not_found(subject_id)
        return schemas.SubjectOut(
            subject_id=subject_id,
            shard=shard_for(subject_id, self.settings.gallery.num_shards),
            templates=[schemas.TemplateOut(template_id=t[0], quality=t[1], enrolled_at=t[2]) for t in templates],
        )

    async def erase(self, subject_id: str) -> schemas.ErasedOut:
        erased = await self.handles.searcher.delete.remote(subject_id)
        if not erased:
            raise not_found(subject_id)
        return schemas.ErasedOut(
            subject_id=subject_id, shard=shard_for(subject_id, self.settings.gallery.num_shards), erased_template_ids=erased
        )

    async def gallery(self) -> schemas.GalleryOut:
        shards = [self._shard_out(s) for s in await self.handles.searcher.status.remote()]
        return schemas.GalleryOut(
            ready=all(s.ready for s in shards),
            num_shards=len(shards),
            total_templates=sum(s.live_templates or 0 for s in shards),
            snapshot_epochs=sorted({s.snapshot_epoch for s in shards if s.snapshot_epoch is not None}),
            shards=shards,
        )

    @staticmethod
    def _shard_out(stats: dict) -> schemas.ShardOut:
        return schemas.ShardOut(**{k: v for k, v in stats.items() if k in schemas.ShardOut.model_fields})

    async def ready(self) -> schemas.ReadyOut:
        h = self.handles
        stages_up, statuses = await asyncio.gather(
            asyncio.gather(*(stage.ping.remote() for stage in (h.detector, h.quality, h.liveness, h.morph, h.embedder))),
            h.searcher.status.remote(),
        )
        shards = [self._shard_out(s) for s in statuses]
        ready_count = sum(s.ready for s in shards)
        return schemas.ReadyOut(
            ready=all(stages_up) and ready_count == len(shards),
            shards_ready=ready_count,
            num_shards=len(shards),
            detail=shards,
        )

    async def demo_load(self, request: schemas.DemoLoadIn) -> schemas.DemoLoadOut:
        folder = Path(request.folder) if request.folder else self.settings.demo_dir
        if folder is None:
            raise ApiError(422, "no_demo_folder", "no folder given and no demo_dir configured")
        if not folder.is_dir():
            raise ApiError(422, "no_demo_folder", f"{folder} is not a folder on the gateway's machine")
        subjects = enrolled = 0
        skipped: list[schemas.SkippedOut] = []
        wanted = None if request.subjects is None else set(request.subjects)
        for subject_dir in sorted(p for p in folder.iterdir() if p.is_dir() and (wanted is None or p.name in wanted)):
            if not re.fullmatch(schemas.SUBJECT_ID_PATTERN, subject_dir.name):  # the API could not read or erase it
                skipped.append(schemas.SkippedOut(file=str(subject_dir), reason="invalid_subject_id"))
                continue
            count = 0
            for photo in sorted(p for p in subject_dir.iterdir() if p.suffix.lower() in DEMO_EXTENSIONS):
                if count >= request.images_per_subject:
                    break
                try:
                    await self.enrol(subject_dir.name, photo.read_bytes()[: self.settings.image.max_bytes + 1], operation="demo")
                    count += 1
                except (ApiError, ImageError) as exc:  # reported per file; the load goes on
                    skipped.append(schemas.SkippedOut(file=str(photo), reason=exc.code))
            subjects += count > 0
            enrolled += count
        return schemas.DemoLoadOut(folder=str(folder), subjects_enrolled=subjects, templates_enrolled=enrolled, skipped=skipped)
