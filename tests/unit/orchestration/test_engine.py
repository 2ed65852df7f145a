"""The orchestration alone, over in-memory ports: no Ray, no HTTP, no model files (milliseconds)."""

from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from ufme_ray.config import LiveConfig, UfmeSettings
from ufme_ray.gallery import galleries as registry
from ufme_ray.gallery.duplicates import screen
from ufme_ray.gallery.galleries import ShardGalleries, gallery_of, split_key, subject_key
from ufme_ray.gallery.merge import Candidate
from ufme_ray.gallery.requests import RequestKeyReusedError
from ufme_ray.orchestration.engine import Engine, Idempotency
from ufme_ray.orchestration.errors import (
    DuplicateFaceError,
    FaceCutOffError,
    GateRejectedError,
    IdempotencyKeyReusedError,
    MultipleFacesError,
    UnknownSubjectError,
)
from ufme_ray.vision.detector import DetectedFace
from ufme_ray.vision.pipeline import NoFaceError

DIM = 128


def face_at(x: float, y: float, size: float, score: float = 0.9) -> DetectedFace:
    box = np.array([x, y, x + size, y + size], np.float32)
    landmarks = np.array(
        [[x + 0.3 * size, y + 0.4 * size], [x + 0.7 * size, y + 0.4 * size], [x + 0.5 * size, y + 0.55 * size],
         [x + 0.35 * size, y + 0.75 * size], [x + 0.65 * size, y + 0.75 * size]],
        np.float32,
    )
    return DetectedFace(box=box, landmarks=landmarks, score=score)


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


# What a stage replica on a GPU node whose CUDA provider failed would report: CPU alone.
SESSIONS = [
    {"stage": "detector", "models": {"yunet_2023mar": ["CPUExecutionProvider"]}},
    {"stage": "embedder", "models": {"mobilefacenet_foamliu": ["CUDAExecutionProvider", "CPUExecutionProvider"]}},
    {"stage": "morph", "models": {}},
]


class FakeStages:
    """Detects the given faces above the requested threshold; scores come from the test."""

    def __init__(self, faces, *, quality=0.9, liveness=0.95, embeddings=None):
        self.faces, self.quality_score, self.liveness_score = faces, quality, liveness
        self.embeddings = embeddings or [unit(i) for i in range(len(faces))]
        self.detect_thresholds: list[float] = []
        self.morph_calls = 0

    async def detect(self, image_bgr, score_min):
        self.detect_thresholds.append(score_min)
        return [f for f in self.faces if f.score >= score_min]

    async def quality(self, crops):
        return np.full(len(crops), self.quality_score, np.float32)

    async def liveness(self, crops):
        return np.full(len(crops), self.liveness_score, np.float32)

    async def morph(self, crops):
        self.morph_calls += 1
        return None

    async def embed(self, crops):
        kept = [i for i, f in enumerate(self.faces) if f.score >= self.detect_thresholds[-1]]
        return np.stack([self.embeddings[i] for i in kept])

    async def up(self):
        return True

    async def sessions(self):
        return SESSIONS


class FakeGallery:
    """One shard in memory, keyed like the real one (`galleries.subject_key`): the registry, the
    duplicate screen within a gallery, request keys and erased gallery generations as the real
    gallery applies them."""

    def __init__(self):
        self.templates_by_subject: dict[str, list[tuple[int, np.ndarray]]] = {}  # by subject key
        self.requests: dict[bytes, tuple[bytes, int]] = {}
        self.state = ShardGalleries()
        self.seq = 0
        self.next_id = 1
        self.max_galleries = 100

    async def enrol(self, gallery_id, generation, subject_id, vector, quality, *, request=None, duplicates=None):
        if self.state.is_erased(gallery_id, generation):
            raise registry.NoSuchGalleryError(gallery_id)
        duplicate = None
        if duplicates is not None:
            [candidates] = await self.search(vector[None, :], 2, [gallery_id])
            [screened] = screen([subject_id], vector[None, :], [candidates], duplicates.threshold, reject=duplicates.reject)
            if not screened.accepted:
                return {"template_id": None, "shard": None, "seq": None, "duplicate_of": screened.duplicate_of}
            duplicate = screened.duplicate_of
        if request is not None and request[:16] in self.requests:
            first, template_id = self.requests[request[:16]]
            if first != request:
                raise RequestKeyReusedError("reused")
            return {"template_id": template_id, "shard": 0, "seq": 0, "duplicate_of": duplicate}
        self.templates_by_subject.setdefault(subject_key(gallery_id, subject_id), []).append((self.next_id, vector))
        if request is not None:
            self.requests[request[:16]] = (request, self.next_id)
        self.next_id += 1
        return {"template_id": self.next_id - 1, "shard": 0, "seq": self.next_id, "duplicate_of": duplicate}

    def _forget(self, erased):
        self.requests = {name: held for name, held in self.requests.items() if held[1] not in erased}

    async def delete(self, gallery_id, subject_id):
        erased = [t for t, _ in self.templates_by_subject.pop(subject_key(gallery_id, subject_id), [])]
        self._forget(erased)
        return erased

    async def templates(self, gallery_id, subject_id):
        return [(t, 1.0, 0.0) for t, _ in self.templates_by_subject.get(subject_key(gallery_id, subject_id), [])]

    async def subject_scores(self, gallery_id, subject_id, queries):
        held = self.templates_by_subject.get(subject_key(gallery_id, subject_id), [])
        return [[(t, float(v @ q)) for t, v in held] for q in queries]

    async def search(self, queries, top_k, galleries):
        answers = []
        for q in queries:
            best = [
                Candidate(key, float(max(v @ q for _, v in ts)), ts[0][0]).named()
                for key, ts in self.templates_by_subject.items()
                if gallery_of(key) in galleries
            ]
            answers.append(sorted(best, key=lambda c: -c.score)[:top_k])
        return answers

    async def change_gallery(self, event):
        self.state.registry.check(event, max_galleries=self.max_galleries)
        self.seq += 1
        self.state.registry.apply(self.seq, event)
        return self.state.registry.get(event.gallery_id)

    async def gallery(self, gallery_id):
        return self.state.registry.get(gallery_id)

    async def galleries(self):
        return self.state.registry.records()

    async def erase_gallery(self, gallery_id, generation):
        keys = [key for key in self.templates_by_subject if gallery_of(key) == gallery_id]
        erased = [t for key in keys for t, _ in self.templates_by_subject.pop(key)]
        self._forget(erased)
        self.state.erase(gallery_id, generation)
        return len(erased)

    async def gallery_counts(self, gallery_id):
        held = {k: ts for k, ts in self.templates_by_subject.items() if gallery_of(k) == gallery_id}
        return [{"shard": 0, "subjects": len(held), "templates": sum(map(len, held.values()))}]

    async def list_subjects(self, gallery_id, offset, limit):
        subjects = sorted(split_key(k)[1] for k in self.templates_by_subject if gallery_of(k) == gallery_id)
        return subjects[offset : offset + limit]

    async def status(self):
        return [{"shard": 0, "ready": True, "live_templates": sum(map(len, self.templates_by_subject.values()))}]


class NoMetrics:
    class _Sink:
        def inc(self, value=1.0, tags=None):
            pass

        def observe(self, value, tags=None):
            pass

    gate_rejections = faces_per_image = _Sink()


PHOTO = cv2.imencode(".png", np.full((400, 400, 3), 128, np.uint8))[1].tobytes()


def engine_for(stages, gallery=None, tmp_path=None) -> Engine:
    settings = UfmeSettings(model_dir=tmp_path, data_dir=tmp_path)
    return Engine(settings, stages, gallery or FakeGallery(), NoMetrics())


def run(coroutine):
    return asyncio.run(coroutine)


def test_the_live_detection_threshold_is_the_one_applied_and_reported(tmp_path):
    stages = FakeStages([face_at(100, 100, 150, score=0.95), face_at(20, 20, 40, score=0.7)])
    engine = engine_for(stages, tmp_path=tmp_path)
    assert len(run(engine.analyze(PHOTO)).faces) == 2
    engine.apply_live_config(LiveConfig.model_validate({"thresholds": {"detection_min": 0.8}}))
    analysis = run(engine.analyze(PHOTO))
    assert stages.detect_thresholds[-1] == 0.8
    assert [f.face.detection_score for f in analysis.faces] == [pytest.approx(0.95)]
    assert analysis.thresholds.detection_min == 0.8


def test_enrolment_refuses_no_face_ambiguous_faces_and_cut_faces(tmp_path):
    with pytest.raises(NoFaceError):
        run(engine_for(FakeStages([]), tmp_path=tmp_path).enrol("alice", PHOTO))
    with pytest.raises(MultipleFacesError):
        run(engine_for(FakeStages([face_at(10, 10, 120), face_at(200, 200, 110)]), tmp_path=tmp_path).enrol("alice", PHOTO))
    with pytest.raises(FaceCutOffError):
        run(engine_for(FakeStages([face_at(300, 100, 150)]), tmp_path=tmp_path).enrol("alice", PHOTO))


def test_a_failed_enforced_gate_names_the_gate_and_stores_nothing(tmp_path):
    gallery = FakeGallery()
    engine = engine_for(FakeStages([face_at(100, 100, 150)], quality=0.1), gallery, tmp_path)
    with pytest.raises(GateRejectedError) as refused:
        run(engine.enrol("alice", PHOTO))
    assert refused.value.code == "quality_gate_failed" and refused.value.failed == ["quality"]
    assert gallery.templates_by_subject == {}


def test_a_face_of_another_subject_is_refused_as_duplicate(tmp_path):
    gallery = FakeGallery()
    run(engine_for(FakeStages([face_at(100, 100, 150)]), gallery, tmp_path).enrol("alice", PHOTO))
    with pytest.raises(DuplicateFaceError) as refused:
        run(engine_for(FakeStages([face_at(100, 100, 150)]), gallery, tmp_path).enrol("bob", PHOTO))
    assert refused.value.details["subject_id"] == "alice"
    assert list(gallery.templates_by_subject) == ["alice"]


def test_a_retry_under_one_idempotency_key_enrols_once_and_answers_the_first_template(tmp_path):
    gallery = FakeGallery()
    engine = engine_for(FakeStages([face_at(100, 100, 150)]), gallery, tmp_path)
    key = Idempotency("test-enrol", "retry-1")
    first = run(engine.enrol("alice", PHOTO, idempotency=key))
    again = run(engine.enrol("alice", PHOTO, idempotency=key))
    assert again.template_id == first.template_id and len(gallery.templates_by_subject["alice"]) == 1
    # The same key from another caller is another request; without a key, a second template.
    assert run(engine.enrol("alice", PHOTO, idempotency=Idempotency("other-key", "retry-1"))).template_id != first.template_id
    assert run(engine.enrol("alice", PHOTO)).template_id not in (first.template_id,)
    with pytest.raises(IdempotencyKeyReusedError):
        run(engine.enrol("alice", PHOTO + b"\0", idempotency=key))  # another image under the same key


def test_identify_decides_match_unknown_and_rejected_per_face(tmp_path):
    gallery = FakeGallery()
    run(engine_for(FakeStages([face_at(100, 100, 150)]), gallery, tmp_path).enrol("alice", PHOTO))
    stages = FakeStages([face_at(100, 100, 150), face_at(300, 20, 60)], embeddings=[unit(0), unit(7)])
    answer = run(engine_for(stages, gallery, tmp_path).identify(PHOTO, top_k=3))
    assert [f.decision.status for f in answer.faces] == ["match", "unknown"]
    assert answer.faces[0].decision.subject_id == "alice"
    spoof = FakeStages([face_at(100, 100, 150)], liveness=0.01)
    rejected = run(engine_for(spoof, gallery, tmp_path).identify(PHOTO, top_k=3)).faces[0]
    assert rejected.decision.status == "rejected" and rejected.candidates == []


def test_a_stage_without_a_model_is_not_called(tmp_path):
    stages = FakeStages([face_at(100, 100, 150)])
    engine = engine_for(stages, tmp_path=tmp_path)
    assert engine.specs.morph is None  # the default model set has no morph model
    face = run(engine.analyze(PHOTO)).faces[0].face
    assert stages.morph_calls == 0
    assert face.morph is None and face.quality == pytest.approx(0.9)


def test_reading_verifying_or_erasing_an_unknown_subject_is_refused(tmp_path):
    engine = engine_for(FakeStages([face_at(100, 100, 150)]), tmp_path=tmp_path)
    for operation in (engine.subject("nobody"), engine.erase("nobody"), engine.verify_subject(PHOTO, "nobody")):
        with pytest.raises(UnknownSubjectError):
            run(operation)
