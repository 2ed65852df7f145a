"""The default PAD ensemble on Silent-Face's live, print and replay samples."""

from __future__ import annotations

from pathlib import Path

from tests.unit.vision.conftest import main_face


def test_pad_samples(pipeline, faces_dir: Path):
    live = main_face(pipeline, faces_dir / "pad/live/silentface_image_T1.jpg")
    printed = main_face(pipeline, faces_dir / "pad/print/silentface_image_F1.jpg")
    replay = main_face(pipeline, faces_dir / "pad/replay/silentface_image_F2.jpg")
    assert live.liveness >= pipeline.thresholds.liveness_min and live.gates["liveness"].status == "pass"
    assert printed.liveness < 0.5 and printed.gates["liveness"].status == "fail"
    assert replay.liveness < 0.5 and replay.gates["liveness"].status == "fail"
    assert not printed.accepted and printed.rejected_by == ["liveness"]


def test_no_crops_give_no_scores(pipeline):
    assert pipeline.liveness.run([]).shape == (0,)
    assert all(member.run([]).shape == (0,) for member in pipeline.liveness.members)
