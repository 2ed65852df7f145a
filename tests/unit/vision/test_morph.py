"""The generic morph-detector wrapper, proven with a tiny ONNX model the test builds itself.

No public MAD model exists (see ../shared/models/PROVENANCE.md), so the plumbing is checked
against a model whose output we can compute by hand: logits = [0, a * mean(R/255) + b].
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from ufme_ray.config import UfmeSettings
from ufme_ray.vision.pipeline import Pipeline

A, B = 6.0, -2.0
SIZE = 64


def build_tiny_mad(path: Path) -> None:
    weight = np.zeros((3, 2), np.float32)
    weight[0, 1] = A  # only the red channel's mean feeds the "morph" logit
    bias = np.array([0.0, B], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "tiny_mad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        initializer=[
            numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"),
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(bias, "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def morph_settings(tmp_path_factory, model_dir: Path) -> UfmeSettings:
    folder = tmp_path_factory.mktemp("models")
    for model in model_dir.glob("*.onnx"):
        (folder / model.name).symlink_to(model)
    build_tiny_mad(folder / "tiny_mad.onnx")
    manifest = folder / "extra.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "tiny_mad": {
                        "kind": "morph",
                        "family": "onnx_mad",
                        "file": "tiny_mad.onnx",
                        "sha256": hashlib.sha256((folder / "tiny_mad.onnx").read_bytes()).hexdigest(),
                        "urls": [],
                        "distribution": "built by the test",
                        "licence": "test",
                        "preprocess": {"size": [SIZE, SIZE], "colour": "rgb", "mean": [0, 0, 0], "std": [255, 255, 255], "layout": "nchw"},
                        "crop": {"style": "aligned"},
                        "morph_class": 1,
                        "default_threshold": 0.75,
                    }
                }
            }
        )
    )
    return UfmeSettings(model_dir=folder, model_manifest=manifest, models={"morph": "tiny_mad"})


def expected_score(pipeline: Pipeline, image, face) -> float:
    crop = pipeline.morph.crop(image.bgr, face)
    red = crop[:, :, 2].astype(np.float64).mean() / 255.0
    return float(1 / (1 + np.exp(-(A * red + B))))


def test_not_configured_by_default(pipeline, faces_dir: Path):
    face = pipeline.analyze((faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()).faces[0]
    assert face.morph is None
    assert face.gates["morph"].status == "not_configured"
    assert face.to_dict()["morph"] == {"status": "not_configured"}


def test_configured_model_scores_every_face(morph_settings, faces_dir: Path):
    pipeline = Pipeline.from_settings(morph_settings)
    image = pipeline.decode((faces_dir / "deepface/_multi_face/selfie-many-people.jpg").read_bytes())
    analysis = pipeline.analyze_decoded([image])[0]
    assert len(analysis.faces) == 6
    detected = pipeline.detector.detect(image.bgr)
    for face, raw in zip(analysis.faces, detected):
        assert face.morph == pytest.approx(expected_score(pipeline, image, raw), abs=1e-5)
        assert face.to_dict()["morph"]["status"] == "scored"
    # Six faces, six different crops: the batch went through the rewritten graph in one call.
    assert len({round(face.morph, 6) for face in analysis.faces}) == 6


def test_morph_gate_uses_the_threshold(morph_settings, faces_dir: Path):
    data = (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()
    score = Pipeline.from_settings(morph_settings).analyze(data).faces[0].morph
    with_max = lambda value: UfmeSettings(**{**morph_settings.model_dump(), "thresholds": {"morph_max": value}})  # noqa: E731
    strict, lenient = Pipeline.from_settings(with_max(score - 0.01)), Pipeline.from_settings(with_max(score + 0.01))
    rejected, accepted = strict.analyze(data).faces[0], lenient.analyze(data).faces[0]
    assert rejected.gates["morph"].status == "fail" and "morph" in rejected.rejected_by
    assert accepted.gates["morph"].status == "pass"
    assert rejected.gates["morph"].rule == "<"
