"""How a photo arrived decides its gates: capture type, quality filter, and the face named by a box."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.unit.orchestration.test_engine import PHOTO, FakeGallery, FakeStages, engine_for, face_at
from ufme_ray.orchestration.engine import Intake
from ufme_ray.orchestration.errors import (
    FaceNotFoundError,
    GateRejectedError,
    MultipleFacesError,
)

SPOOF_LIKE = 0.2  # a liveness score below the default threshold


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_live_capture_enforces_liveness_and_a_stored_one_does_not(tmp_path):
    engine = engine_for(FakeStages([face_at(100, 100, 150)], liveness=SPOOF_LIKE), tmp_path=tmp_path)
    with pytest.raises(GateRejectedError) as refused:
        run(engine.enrol("ann", PHOTO, intake=Intake("live")))
    assert refused.value.failed == ["liveness"] and refused.value.capture == "live"
    stored = run(engine.enrol("ann", PHOTO, intake=Intake("stored")))
    assert stored.face.capture == "stored" and stored.face.enforced == ["quality", "morph"]
    liveness = stored.face.face.gates["liveness"]
    assert liveness.status == "not_applicable" and liveness.score == pytest.approx(SPOOF_LIKE)


def test_a_stored_capture_enforces_quality_even_where_the_policy_does_not(tmp_path):
    engine = engine_for(FakeStages([face_at(100, 100, 150)], quality=0.1), tmp_path=tmp_path)
    identified = run(engine.identify(PHOTO, 3, intake=Intake("live")))
    assert identified.faces[0].decision.status != "rejected"  # identify's gates: liveness, morph
    stored = run(engine.identify(PHOTO, 3, intake=Intake("stored")))
    assert stored.faces[0].decision.status == "rejected" and "quality" in stored.faces[0].decision.reason


def test_the_gallery_policy_gives_the_default_capture(tmp_path):
    gallery = FakeGallery()
    engine = engine_for(FakeStages([face_at(100, 100, 150)], liveness=SPOOF_LIKE), gallery, tmp_path=tmp_path)
    run(engine.create_gallery("badges", "ID photos", {"gates": {"capture": "stored"}}))
    enrolled = run(engine.enrol("ann", PHOTO, gallery_id="badges"))
    assert enrolled.face.capture == "stored"
    with pytest.raises(GateRejectedError):
        run(engine.enrol("bob", PHOTO))  # default stays live
    with pytest.raises(GateRejectedError):
        run(engine.enrol("eve", PHOTO, gallery_id="badges", intake=Intake("live")))  # the request decides


@pytest.mark.parametrize(("level", "passes"), [("none", True), ("low", True), ("auto", False), ("high", False)])
def test_a_quality_filter_is_stricter_than_the_floor_never_laxer(tmp_path, level, passes):
    engine = engine_for(FakeStages([face_at(100, 100, 150)], quality=0.57), tmp_path=tmp_path)
    intake = Intake("live", level)
    if passes:
        enrolled = run(engine.enrol("ann", PHOTO, intake=intake))
        assert enrolled.face.face.gates["quality"].status == "pass"
    else:
        with pytest.raises(GateRejectedError) as refused:
            run(engine.enrol("ann", PHOTO, intake=intake))
        gate = refused.value.face.gates["quality"]
        assert refused.value.failed == ["quality"] and gate.threshold == engine.specs.quality_filter(level)
    # A filter laxer than the policy's floor keeps the floor.
    strict = engine_for(FakeStages([face_at(100, 100, 150)], quality=0.57), tmp_path=tmp_path)
    strict.apply_live_config(strict.live_config.overlay({"thresholds": {"quality_min": 0.58}}))
    with pytest.raises(GateRejectedError):
        run(strict.enrol("ann", PHOTO, intake=Intake("live", "low")))


def test_a_box_names_the_face_to_enrol_in_a_group_photo(tmp_path):
    left, right = face_at(20, 100, 120), face_at(220, 100, 120)
    stages = FakeStages([left, right])
    gallery = FakeGallery()
    engine = engine_for(stages, gallery, tmp_path=tmp_path)
    with pytest.raises(MultipleFacesError):
        run(engine.enrol("ann", PHOTO))
    box = [float(v) for v in right.box + np.array([3, -2, 4, 1])]  # as analyze returned it, give or take
    run(engine.enrol("ann", PHOTO, box=box))
    [(_, stored)] = gallery.templates_by_subject["ann"]
    assert np.allclose(stored, stages.embeddings[1])
    with pytest.raises(FaceNotFoundError):
        run(engine.enrol("bob", PHOTO, box=[300.0, 300.0, 390.0, 390.0]))
