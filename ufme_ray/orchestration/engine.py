"""The operations: analyze, enrol (with its duplicate check), identify, verify, read, erase.

`Engine` is the only place that knows the order of the stages. Thresholds and policies come from
one live source, swapped whole by `apply_live_config`; each request reads it once, so a request
sees one consistent configuration and its answer reports the values it applied.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from ufme_ray.config import DuplicatePolicy, GatePolicy, LiveConfig, UfmeSettings
from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.merge import Candidate
from ufme_ray.gallery.requests import RequestKeyReusedError, request_key
from ufme_ray.gallery.routing import shard_for
from ufme_ray.orchestration import results
from ufme_ray.orchestration.errors import (
    DuplicateFaceError,
    GateRejectedError,
    IdempotencyKeyReusedError,
    UnknownSubjectError,
)
from ufme_ray.orchestration.faces import enforced_failures, main_face, single_face
from ufme_ray.orchestration.ports import Gallery, Metrics, Stages
from ufme_ray.vision.align import model_crop
from ufme_ray.vision.embedder import embedder_crop
from ufme_ray.vision.gates import ResolvedThresholds
from ufme_ray.vision.image import decode_image
from ufme_ray.vision.pipeline import FaceAnalysis, ImageAnalysis, assemble_faces, cosine_similarity
from ufme_ray.vision.quality import quality_crop
from ufme_ray.vision.registry import ModelSpecs


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


class Engine:
    def __init__(self, settings: UfmeSettings, stages: Stages, gallery: Gallery, metrics: Metrics):
        self.settings = settings
        self.specs = ModelSpecs.from_settings(settings)
        self.stages = stages
        self.gallery = gallery
        self.metrics = metrics
        self.calibration = self.specs.embedder.calibration
        self.apply_live_config(LiveConfig(thresholds=settings.thresholds, gates=settings.gates, duplicates=settings.duplicates))

    def apply_live_config(self, config: LiveConfig) -> None:
        thresholds = self.specs.thresholds(self.settings.model_copy(update={"thresholds": config.thresholds}))
        self.live = LivePolicy(config.gates, thresholds, config.duplicates)

    @property
    def thresholds(self) -> ResolvedThresholds:
        return self.live.thresholds

    def _shard(self, subject_id: str) -> int:
        return shard_for(subject_id, self.settings.gallery.num_shards)

    def _candidate(self, candidate: Candidate) -> results.CandidateResult:
        return results.CandidateResult(
            candidate.subject_id, candidate.score, candidate.template_id, self._estimated_far(candidate.score)
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
        crops = await asyncio.to_thread(self._crops, image.bgr, faces)
        quality, liveness, morph, embeddings = await asyncio.gather(
            self.stages.quality(crops["quality"]),
            self.stages.liveness(crops["liveness"]),
            self.stages.morph(crops["morph"]),
            self.stages.embed(crops["embedder"]),
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

    def _count_rejections(self, operation: str, failed: list[str]) -> None:
        for gate in failed:
            self.metrics.gate_rejections.inc(tags={"gate": gate, "operation": operation})

    def _check_gates(self, operation: str, face: FaceAnalysis, enforced: list[str]) -> results.GatedFace:
        failed = enforced_failures(face, enforced)
        self._count_rejections(operation, failed)
        if failed:
            raise GateRejectedError(face, enforced, failed)
        return results.GatedFace(face, enforced)

    # --- operations -----------------------------------------------------------------------------

    async def analyze(self, data: bytes) -> results.Analysis:
        """Every face with its scores; no gate is enforced and nothing is searched."""
        thresholds = self.live.thresholds
        analysis = await self._analyze(data, thresholds)
        faces = [results.GatedFace(f, []) for f in analysis.faces]
        return results.Analysis(analysis.width, analysis.height, faces, thresholds)

    async def enrol(
        self, subject_id: str, data: bytes, *, operation: str = "enrol", idempotency: Idempotency | None = None
    ) -> results.Enrolled:
        """Enrol the photo's one face; under an idempotency key, a retry adds nothing and answers
        with the first template."""
        live = self.live
        enforced = live.gates.demo if operation == "demo" else live.gates.enrol
        analysis = await self._analyze(data, live.thresholds)
        face = single_face(analysis, live.gates.enrol_dominance_ratio)
        gated = self._check_gates(operation, face, enforced)
        request = None if idempotency is None else request_key(idempotency.scope, idempotency.key, subject_id, data)
        quality = face.quality if face.quality is not None else 1.0
        try:
            stored = await self.gallery.enrol(
                subject_id, face.embedding, quality, request=request, duplicates=self._duplicate_check(live)
            )
        except RequestKeyReusedError:
            raise IdempotencyKeyReusedError() from None
        duplicate = stored["duplicate_of"]
        if stored["template_id"] is None:
            raise DuplicateFaceError(duplicate.subject_id, duplicate.score, live.duplicates.threshold_or(live.thresholds))
        return results.Enrolled(
            subject_id, stored["template_id"], stored["shard"], gated, live.thresholds,
            None if duplicate is None else self._candidate(duplicate),
        )

    @staticmethod
    def _duplicate_check(live: LivePolicy) -> DuplicateCheck | None:
        """How the gallery screens the face for another subject it already is; None: not at all."""
        policy = live.duplicates
        if policy.action == "allow":
            return None
        return DuplicateCheck(policy.threshold_or(live.thresholds), reject=policy.action == "reject")

    async def identify(self, data: bytes, top_k: int) -> results.Identification:
        live = self.live
        enforced = live.gates.identify
        analysis = await self._analyze(data, live.thresholds)
        searchable = [f for f in analysis.faces if not enforced_failures(f, enforced)]
        found = iter(await self.gallery.search(np.stack([f.embedding for f in searchable]), top_k) if searchable else [])
        identified = []
        for face in analysis.faces:
            failed = enforced_failures(face, enforced)
            self._count_rejections("identify", failed)
            candidates = [] if failed else [self._candidate(c) for c in next(found)]
            identified.append(
                results.IdentifiedFace(results.GatedFace(face, enforced), candidates, self._decide(failed, candidates, live))
            )
        return results.Identification(identified, live.thresholds)

    @staticmethod
    def _decide(failed: list[str], candidates: list[results.CandidateResult], live: LivePolicy) -> results.Decision:
        if failed:
            return results.Decision("rejected", reason=f"failed gate(s): {', '.join(failed)}")
        best = candidates[0] if candidates else None
        if best is not None and best.score >= live.thresholds.similarity_min:
            return results.Decision("match", subject_id=best.subject_id, score=best.score)
        return results.Decision("unknown", score=None if best is None else best.score)

    async def _probe(self, data: bytes, live: LivePolicy) -> results.GatedFace:
        analysis = await self._analyze(data, live.thresholds)
        return self._check_gates("verify", main_face(analysis), live.gates.verify)

    async def verify_subject(self, data: bytes, subject_id: str) -> results.Verification:
        live = self.live
        probe = await self._probe(data, live)
        [scores] = await self.gallery.subject_scores(subject_id, probe.face.embedding[None, :])
        if not scores:
            raise UnknownSubjectError(subject_id)
        template_id, similarity = max(scores, key=lambda pair: pair[1])
        threshold = live.thresholds.similarity_min
        return results.Verification(
            similarity >= threshold, similarity, threshold, probe, self._estimated_far(similarity),
            subject_id=subject_id, template_id=template_id,
        )

    async def verify_images(self, first: bytes, second: bytes) -> results.Verification:
        live = self.live
        probe, other = await asyncio.gather(self._probe(first, live), self._probe(second, live))
        similarity = cosine_similarity(probe.face.embedding, other.face.embedding)
        threshold = live.thresholds.similarity_min
        return results.Verification(
            similarity >= threshold, similarity, threshold, probe, self._estimated_far(similarity), other_face=other
        )

    async def subject(self, subject_id: str) -> results.SubjectTemplates:
        templates = await self.gallery.templates(subject_id)
        if not templates:
            raise UnknownSubjectError(subject_id)
        return results.SubjectTemplates(
            subject_id, self._shard(subject_id), [results.Template(*template) for template in templates]
        )

    async def erase(self, subject_id: str) -> results.Erasure:
        erased = await self.gallery.delete(subject_id)
        if not erased:
            raise UnknownSubjectError(subject_id)
        return results.Erasure(subject_id, self._shard(subject_id), erased)

    async def gallery_state(self) -> results.GalleryState:
        return results.GalleryState(await self.gallery.status())

    async def readiness(self) -> results.GalleryState:
        """All shards restored and every stage answering."""
        stages_up, shards = await asyncio.gather(self.stages.up(), self.gallery.status())
        return results.GalleryState(shards, stages_up=stages_up)
