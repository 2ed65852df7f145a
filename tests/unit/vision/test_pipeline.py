"""The in-process pipeline on real photos with the default model set: compare, batches, no face."""

from __future__ import annotations

import asyncio
from pathlib import Path

import cv2
import numpy as np
import pytest

from ufme_ray.orchestration.local_stages import PipelineStages
from ufme_ray.vision.pipeline import NoFaceError


def test_compare_decides_at_the_threshold(pipeline, faces_dir: Path):
    same = pipeline.compare(
        (faces_dir / "deepface/id01/img1.jpg").read_bytes(), (faces_dir / "deepface/id01/img10.jpg").read_bytes()
    )
    other = next((faces_dir / "deepface/id02").glob("*.jpg"))
    different = pipeline.compare((faces_dir / "deepface/id01/img1.jpg").read_bytes(), other.read_bytes())
    assert same.match and same.similarity > 0.55
    assert not different.match and different.similarity < 0.2


def test_analyze_many_keeps_slots_for_bad_images(pipeline, faces_dir: Path):
    good = (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()
    results = pipeline.analyze_many([good, b"not an image", good[:500]])
    assert len(results[0].faces) == 1
    assert results[1].code == "unsupported_image_type"
    assert results[2].code == "corrupt_image"


def test_no_face(pipeline):
    blank = cv2.imencode(".png", np.full((300, 300, 3), 200, np.uint8))[1].tobytes()
    assert pipeline.analyze(blank).faces == []
    with pytest.raises(NoFaceError):
        pipeline.compare(blank, blank)


def test_the_in_process_stages_report_every_session_as_the_replicas_do(pipeline):
    sessions = asyncio.run(PipelineStages(pipeline).sessions())
    assert [s["stage"] for s in sessions] == ["detector", "quality", "liveness", "morph", "embedder"]
    assert {s["stage"]: s["models"] for s in sessions if s["models"]} == pipeline.providers
    assert sessions[3]["models"] == {} and sessions[2]["models"].keys() == {"minifasnet_v2", "minifasnet_v1se"}
