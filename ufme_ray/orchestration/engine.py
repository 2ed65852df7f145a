"""The operations: analyze, enrol (with its duplicate check), identify, verify, read, erase, and
the galleries they act in.

`Engine` is the only place that knows the order of the stages. Thresholds and policies come from
one live source, swapped whole by `apply_live_config`, with the gallery's own policy laid over it
(`orchestration.galleries`); each request resolves them once, so a request sees one consistent
configuration and its answer reports the values it applied. A search of several galleries
applies the strictest of their policies.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, replace

import numpy as np

from ufme_ray.config import Capture, DuplicatePolicy, GatePolicy, LiveConfig, QualityFilter, UfmeSettings
from ufme_ray.gallery import galleries as registry
from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.galleries import DEFAULT_GALLERY, GalleryRecord, subject_key
from ufme_ray.gallery.merge import Candidate
from ufme_ray.gallery.requests import RequestKeyReusedError, request_key
from ufme_ray.gallery.routing import shard_for
from ufme_ray.orchestration import results
from ufme_ray.orchestration.errors import (
    DuplicateFaceError,
    GateRejectedError,
    IdempotencyKeyReusedError,
    QualityFilterUnavailableError,
    UnknownGalleryError,
    UnknownSubjectError,
)
from ufme_ray.orchestration.faces import enforced_failures, main_face, single_face
from ufme_ray.orchestration.galleries import GalleryDeletion, GalleryDirectory
from ufme_ray.orchestration.ports import Gallery, Metrics, Stages
from ufme_ray.vision.gates import ResolvedThresholds
from ufme_ray.vision.image import decode_image
from ufme_ray.vision.pipeline import (
    FaceAnalysis, ImageAnalysis, assemble_faces, cosine_similarity, not_applicable, stage_crops,
)
from ufme_ray.vision.registry import ModelSpecs


@dataclass(frozen=True)
class Intake:
    """How a request's photo arrived (None: the policy's default capture) and the quality it asks for."""

    capture: Capture | None = None
    quality_filter: QualityFilter | None = None


GATE_ORDER = ("quality", "liveness", "morph")


@dataclass(frozen=True)
class Idempotency:
    """A client's Idempotency-Key, named within the scope of who sent it (their key id)."""

    scope: str
    key: str


@dataclass(frozen=True)
class LivePolicy:
    """Everything `user_config` changes, resolved: one object, swapped in one assignment."""

    gates: GatePolicy
    thresholds: ResolvedThresholds
    duplicates: DuplicatePolicy


async def _scores(stage, crops: list) -> np.ndarray | None:
    """A score stage's answer; a stage without a model gets no crops and no call (it would answer None)."""
    return await stage(crops) if crops else None


def _strictest(policies: list[LivePolicy]) -> LivePolicy:
    """One policy at least as strict as each: every gate any enforces, each threshold at its strictest."""
    if len(policies) == 1:
        return policies[0]

    def most(values, pick):
        given = [v for v in values if v is not None]
        return pick(given) if given else None

    t = [p.thresholds for p in policies]
    thresholds = ResolvedThresholds(
        detection_min=max(x.detection_min for x in t),
        similarity_min=max(x.similarity_min for x in t),
        quality_min=most((x.quality_min for x in t), max),
        liveness_min=most((x.liveness_min for x in t), max),
        morph_max=most((x.morph_max for x in t), min),
    )
    gates = policies[0].gates.model_copy(
        update={
            name: list(dict.fromkeys(g for p in policies for g in getattr(p.gates, name)))
            for name in ("enrol", "identify", "verify", "demo")
        }
    )
    return LivePolicy(gates, thresholds, policies[0].duplicates)


class Engine:
    def __init__(self, settings: UfmeSettings, stages: Stages, gallery: Gallery, metrics: Metrics):
        self.settings = settings
        self.specs = ModelSpecs.from_settings(settings)
        self.stages = stages
        self.gallery = gallery
        self.metrics = metrics
        self.calibration = self.specs.embedder.calibration
        self.galleries = GalleryDirectory(gallery)
        self._gallery_policies: dict[str, tuple[str, LivePolicy]] = {}  # gallery -> (its policy, resolved)
        self.apply_live_config(LiveConfig(thresholds=settings.thresholds, gates=settings.gates, duplicates=settings.duplicates))

    def apply_live_config(self, config: LiveConfig) -> None:
        self.live_config = config
        self.live = self._resolve(config)
        self._gallery_policies = {}

    def _resolve(self, config: LiveConfig) -> LivePolicy:
        thresholds = self.specs.thresholds(self.settings.model_copy(update={"thresholds": config.thresholds}))
        return LivePolicy(config.gates, thresholds, config.duplicates)

    def policy(self, records: list[GalleryRecord]) -> LivePolicy:
        """The live config with each gallery's policy laid over it; the strictest over several."""
        policies = []
        for record in records:
            if not record.policy:
                policies.append(self.live)
                continue
            given = json.dumps(record.policy, sort_keys=True)
            known = self._gallery_policies.get(record.gallery_id)
            if known is None or known[0] != given:
                known = (given, self._resolve(self.live_config.overlay(record.policy)))
                self._gallery_policies[record.gallery_id] = known
            policies.append(known[1])
        return _strictest(policies)

    @property
    def thresholds(self) -> ResolvedThresholds:
        return self.live.thresholds

    def _shard(self, gallery_id: str, subject_id: str) -> int:
        return shard_for(subject_key(gallery_id, subject_id), self.settings.gallery.num_shards)

    def _candidate(self, candidate: Candidate) -> results.CandidateResult:
        return results.CandidateResult(
            subject_id=candidate.subject_id, score=candidate.score, template_id=candidate.template_id,
            gallery_id=candidate.gallery_id, estimated_far=self._estimated_far(candidate.score),
        )

    def _estimated_far(self, score: float) -> float | None:
        return None if self.calibration is None else self.calibration.estimated_far(score)

    # --- the pipeline ---------------------------------------------------------------------------

    async def _analyze(self, data: bytes, thresholds: ResolvedThresholds) -> ImageAnalysis:
        """Decode (typed image errors), detect, then score every face on every stage concurrently."""
        image = await asyncio.to_thread(decode_image, data, self.settings.image)
        faces = await self.stages.detect(image.bgr, thresholds.detection_min)
        self.metrics.faces_per_image.observe(len(faces))
        if not faces:
            return ImageAnalysis(image.width, image.height, image.format, [])
        crops = await asyncio.to_thread(stage_crops, self.specs, image.bgr, faces)
        quality, liveness, morph, embeddings = await asyncio.gather(
            _scores(self.stages.quality, crops["quality"]),
            _scores(self.stages.liveness, crops["liveness"]),
            _scores(self.stages.morph, crops["morph"]),
            self.stages.embed(crops["embedder"]),
        )
        analyses = assemble_faces(faces, quality, liveness, morph, embeddings, thresholds)
        return ImageAnalysis(image.width, image.height, image.format, analyses)

    def _count_rejections(self, operation: str, failed: list[str]) -> None:
        for gate in failed:
            self.metrics.gate_rejections.inc(tags={"gate": gate, "operation": operation})

    def _check_gates(self, operation: str, face: FaceAnalysis, enforced: list[str], capture: Capture) -> results.GatedFace:
        failed = enforced_failures(face, enforced)
        self._count_rejections(operation, failed)
        if failed:
            raise GateRejectedError(face, enforced, failed, capture)
        return results.GatedFace(face, enforced, capture)

    def _gating(self, live: LivePolicy, operation: str, intake: Intake) -> tuple[ResolvedThresholds, list[str], Capture]:
        """The thresholds, the enforced gates and the capture type of one request.

        live: liveness is enforced on top of the operation's gates. stored: liveness does not apply
        (a file is not a live capture), quality and morph are enforced (morphs target stored and
        document photos). A quality filter raises the quality threshold, never lowers it below the
        policy's, and enforces the quality gate.
        """
        capture = intake.capture or live.gates.capture
        gates = set(getattr(live.gates, operation))
        gates = gates - {"liveness"} | {"quality", "morph"} if capture == "stored" else gates | {"liveness"}
        thresholds = live.thresholds
        if intake.quality_filter not in (None, "none"):
            try:
                level = self.specs.quality_filter(intake.quality_filter)
            except ValueError as exc:
                raise QualityFilterUnavailableError(str(exc)) from None
            floor = thresholds.quality_min
            thresholds = replace(thresholds, quality_min=level if floor is None else max(floor, level))
            gates.add("quality")
        return thresholds, [g for g in GATE_ORDER if g in gates], capture

    async def _analyze_as(self, data: bytes, thresholds: ResolvedThresholds, capture: Capture) -> ImageAnalysis:
        """`_analyze`, with the liveness gate of a stored photo reported as not applicable."""
        analysis = await self._analyze(data, thresholds)
        if capture == "live":
            return analysis
        return replace(analysis, faces=[not_applicable(face, "liveness") for face in analysis.faces])

    # --- operations -----------------------------------------------------------------------------

    async def analyze(self, data: bytes, *, intake: Intake = Intake()) -> results.Analysis:
        """Every face with its scores; no gate is enforced and nothing is searched."""
        thresholds, _, capture = self._gating(self.live, "identify", intake)
        analysis = await self._analyze_as(data, thresholds, capture)
        faces = [results.GatedFace(f, [], capture) for f in analysis.faces]
        return results.Analysis(analysis.width, analysis.height, faces, thresholds)

    async def enrol(
        self, subject_id: str, data: bytes, *, operation: str = "enrol", idempotency: Idempotency | None = None,
        gallery_id: str = DEFAULT_GALLERY, intake: Intake = Intake(), box: list[float] | None = None,
    ) -> results.Enrolled:
        """Enrol the photo's one face (or the face at `box`) into the gallery; under an idempotency
        key, a retry adds nothing and answers with the first template."""
        record = await self.galleries.record(gallery_id)
        live = self.policy([record])
        thresholds, enforced, capture = self._gating(live, "demo" if operation == "demo" else "enrol", intake)
        analysis = await self._analyze_as(data, thresholds, capture)
        face = single_face(analysis, live.gates.enrol_dominance_ratio, box=box)
        gated = self._check_gates(operation, face, enforced, capture)
        key = subject_key(gallery_id, subject_id)
        request = None if idempotency is None else request_key(idempotency.scope, idempotency.key, key, data)
        quality = face.quality if face.quality is not None else 1.0
        try:
            stored = await self.gallery.enrol(
                gallery_id, record.generation, subject_id, face.embedding, quality, request=request,
                duplicates=self._duplicate_check(live),
            )
        except RequestKeyReusedError:
            raise IdempotencyKeyReusedError() from None
        except registry.NoSuchGalleryError:
            raise UnknownGalleryError(gallery_id) from None  # deleted since its record was read
        duplicate = stored["duplicate_of"]
        if stored["template_id"] is None:
            raise DuplicateFaceError(duplicate.subject_id, duplicate.score, live.duplicates.threshold_or(live.thresholds))
        return results.Enrolled(
            subject_id, stored["template_id"], stored["shard"], gated, thresholds,
            None if duplicate is None else self._candidate(duplicate), gallery_id=gallery_id,
        )

    @staticmethod
    def _duplicate_check(live: LivePolicy) -> DuplicateCheck | None:
        """How the gallery screens the face for another subject it already is; None: not at all."""
        policy = live.duplicates
        if policy.action == "allow":
            return None
        return DuplicateCheck(policy.threshold_or(live.thresholds), reject=policy.action == "reject")

    async def identify(
        self, data: bytes, top_k: int, *, galleries: list[str] | tuple[str, ...] = (DEFAULT_GALLERY,),
        intake: Intake = Intake(),
    ) -> results.Identification:
        records = await self.galleries.records(galleries)
        live = self.policy(records)
        thresholds, enforced, capture = self._gating(live, "identify", intake)
        analysis = await self._analyze_as(data, thresholds, capture)
        searchable = [f for f in analysis.faces if not enforced_failures(f, enforced)]
        ids = [r.gallery_id for r in records]
        found = iter(await self.gallery.search(np.stack([f.embedding for f in searchable]), top_k, ids) if searchable else [])
        identified = []
        for face in analysis.faces:
            failed = enforced_failures(face, enforced)
            self._count_rejections("identify", failed)
            candidates = [] if failed else [self._candidate(c) for c in next(found)]
            identified.append(
                results.IdentifiedFace(
                    results.GatedFace(face, enforced, capture), candidates, self._decide(failed, candidates, live)
                )
            )
        return results.Identification(identified, thresholds, galleries=ids, gates=enforced)

    @staticmethod
    def _decide(failed: list[str], candidates: list[results.CandidateResult], live: LivePolicy) -> results.Decision:
        if failed:
            return results.Decision("rejected", reason=f"failed gate(s): {', '.join(failed)}")
        best = candidates[0] if candidates else None
        if best is not None and best.score >= live.thresholds.similarity_min:
            return results.Decision("match", subject_id=best.subject_id, score=best.score, gallery_id=best.gallery_id)
        return results.Decision("unknown", score=None if best is None else best.score)

    async def _probe(self, data: bytes, live: LivePolicy, intake: Intake) -> results.GatedFace:
        thresholds, enforced, capture = self._gating(live, "verify", intake)
        analysis = await self._analyze_as(data, thresholds, capture)
        return self._check_gates("verify", main_face(analysis), enforced, capture)

    async def verify_subject(
        self, data: bytes, subject_id: str, *, gallery_id: str = DEFAULT_GALLERY, intake: Intake = Intake()
    ) -> results.Verification:
        live = self.policy([await self.galleries.record(gallery_id)])
        probe = await self._probe(data, live, intake)
        [scores] = await self.gallery.subject_scores(gallery_id, subject_id, probe.face.embedding[None, :])
        if not scores:
            raise UnknownSubjectError(subject_id)
        template_id, similarity = max(scores, key=lambda pair: pair[1])
        threshold = live.thresholds.similarity_min
        return results.Verification(
            similarity >= threshold, similarity, threshold, probe, self._estimated_far(similarity),
            subject_id=subject_id, template_id=template_id, gallery_id=gallery_id,
        )

    async def verify_images(self, first: bytes, second: bytes, *, intake: Intake = Intake()) -> results.Verification:
        live = self.live
        probe, other = await asyncio.gather(self._probe(first, live, intake), self._probe(second, live, intake))
        similarity = cosine_similarity(probe.face.embedding, other.face.embedding)
        threshold = live.thresholds.similarity_min
        return results.Verification(
            similarity >= threshold, similarity, threshold, probe, self._estimated_far(similarity), other_face=other
        )

    async def subject(self, subject_id: str, *, gallery_id: str = DEFAULT_GALLERY) -> results.SubjectTemplates:
        await self.galleries.record(gallery_id)
        templates = await self.gallery.templates(gallery_id, subject_id)
        if not templates:
            raise UnknownSubjectError(subject_id)
        return results.SubjectTemplates(
            subject_id, self._shard(gallery_id, subject_id), [results.Template(*template) for template in templates],
            gallery_id=gallery_id,
        )

    async def erase(self, subject_id: str, *, gallery_id: str = DEFAULT_GALLERY) -> results.Erasure:
        await self.galleries.record(gallery_id)
        erased = await self.gallery.delete(gallery_id, subject_id)
        if not erased:
            raise UnknownSubjectError(subject_id)
        return results.Erasure(subject_id, self._shard(gallery_id, subject_id), erased, gallery_id=gallery_id)

    async def subjects(self, gallery_id: str, offset: int, limit: int) -> results.SubjectPage:
        await self.galleries.record(gallery_id)
        counts, subjects = await asyncio.gather(
            self.gallery.gallery_counts(gallery_id), self.gallery.list_subjects(gallery_id, offset, limit)
        )
        return results.SubjectPage(gallery_id, subjects, sum(c["subjects"] for c in counts))

    # --- galleries ------------------------------------------------------------------------------

    async def create_gallery(self, gallery_id: str, description: str, policy: dict) -> results.GalleryInfo:
        record = await self.galleries.create(gallery_id, description, policy)
        return await self._gallery_info(record)

    async def update_gallery(self, gallery_id: str, *, description: str | None, policy: dict | None) -> results.GalleryInfo:
        await self.galleries.record(gallery_id)
        record = await self.galleries.update(gallery_id, description=description, policy=policy)
        return await self._gallery_info(record)

    async def delete_gallery(self, gallery_id: str) -> GalleryDeletion:
        return await self.galleries.delete(gallery_id)

    async def gallery_info(self, gallery_id: str) -> results.GalleryInfo:
        return await self._gallery_info(await self.galleries.record(gallery_id))

    async def list_galleries(self, offset: int, limit: int) -> tuple[list[GalleryRecord], int]:
        records = [r for r in await self.galleries.listing() if not r.deleting]
        return records[offset : offset + limit], len(records)

    async def _gallery_info(self, record: GalleryRecord) -> results.GalleryInfo:
        counts, shards = await asyncio.gather(self.gallery.gallery_counts(record.gallery_id), self.gallery.status())
        epochs = sorted({s["snapshot_epoch"] for s in shards if s.get("snapshot_epoch") is not None})
        return results.GalleryInfo(record, counts, epochs, self.policy([record]))

    async def gallery_state(self) -> results.GalleryState:
        return results.GalleryState(await self.gallery.status())

    async def readiness(self) -> results.GalleryState:
        """All shards restored and every stage answering."""
        stages_up, shards = await asyncio.gather(self.stages.up(), self.gallery.status())
        return results.GalleryState(shards, stages_up=stages_up)
