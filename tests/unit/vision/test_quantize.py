"""int8 variants: `ufme-ray models quantize` on 8 real photos, the local manifest, `runtime.precision`.

One module-scoped build (the configured YuNet and MobileFaceNet, calibrated on 8 deepface photos,
disjoint from the LFW faces the embeddings are checked on) serves every test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from ufme_ray.cli import main
from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.models.errors import ModelCorruptError, VariantMissingError
from ufme_ray.models.variants import LOCAL_MANIFEST, read_local_manifest, record_variant
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.quantize import calibration_photos, photo_list_sha256
from ufme_ray.vision.registry import ModelSpecs, load_embedder, precision_mix

CALIBRATION_PHOTOS = 8
INT8_EMBEDDER = "mobilefacenet_foamliu.int8.onnx"
INT8_DETECTOR = "face_detection_yunet_2023mar.int8.onnx"
# Measured (uint8 activations): 8 calibration photos keep these 12 LFW faces at cosine >= 0.990
# (mean 0.994) to fp32, and all 433 faces of the LFW photos at >= 0.963 (mean 0.992); the bound
# leaves room for other CPUs' kernels.
MIN_COSINE = 0.97


def _model_folder(model_dir: Path, folder: Path) -> Path:
    """A writable model folder holding links to the real (read-only) fp32 files."""
    folder.mkdir()
    for path in model_dir.glob("*.onnx"):
        os.symlink(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def int8_dir(model_dir: Path, faces_dir: Path, tmp_path_factory) -> Path:
    folder = _model_folder(model_dir, tmp_path_factory.mktemp("int8") / "models")
    code = main([
        "--model-dir", str(folder), "models", "quantize",
        "--photos", str(faces_dir / "deepface"), "--count", str(CALIBRATION_PHOTOS),
    ])
    assert code == 0
    return folder


def _settings(folder: Path, tmp_path: Path, precision: str) -> UfmeSettings:
    return UfmeSettings(model_dir=folder, data_dir=tmp_path, runtime={"precision": precision})


def test_quantize_writes_both_variants_and_records_their_sha256(int8_dir: Path, faces_dir: Path, model_dir: Path):
    variants = read_local_manifest(int8_dir).variants
    assert sorted(variants) == ["mobilefacenet_foamliu.int8", "yunet_2023mar.int8"]
    photos = calibration_photos([faces_dir / "deepface"], CALIBRATION_PHOTOS)
    for variant, fp32_file in ((variants["mobilefacenet_foamliu.int8"], "mobilefacenet_foamliu.onnx"),
                               (variants["yunet_2023mar.int8"], "face_detection_yunet_2023mar.onnx")):
        data = (int8_dir / variant.file).read_bytes()
        assert variant.sha256 == hashlib.sha256(data).hexdigest() and variant.bytes == len(data)
        assert variant.base_sha256 == hashlib.sha256((model_dir / fp32_file).read_bytes()).hexdigest()
        assert variant.calibration.photos == CALIBRATION_PHOTOS
        assert variant.calibration.photos_sha256 == photo_list_sha256(photos)
        assert len(data) < 0.75 * (model_dir / fp32_file).stat().st_size  # int8 weights: about a third
    assert variants["mobilefacenet_foamliu.int8"].file == INT8_EMBEDDER
    assert variants["yunet_2023mar.int8"].file == INT8_DETECTOR
    # Faces, not photos, calibrate the embedder: the group photos give more than one.
    assert variants["mobilefacenet_foamliu.int8"].calibration.inputs >= CALIBRATION_PHOTOS


def test_precision_int8_makes_the_registry_load_the_int8_files(int8_dir: Path, tmp_path: Path):
    specs = ModelSpecs.from_settings(_settings(int8_dir, tmp_path, "int8"))
    assert (specs.detector.file, specs.embedder.file) == (INT8_DETECTOR, INT8_EMBEDDER)
    assert specs.quality.file == "lightqnet-dm100.onnx"  # the gates stay fp32
    # The variant keeps its base's preprocessing and score calibration (thresholds, FAR estimates).
    fp32 = ModelSpecs.from_settings(_settings(int8_dir, tmp_path, "fp32"))
    assert specs.embedder.calibration == fp32.embedder.calibration
    assert specs.embedder.preprocess == fp32.embedder.preprocess
    embedder = load_embedder(_settings(int8_dir, tmp_path, "int8"), specs)
    assert embedder.spec.name == "mobilefacenet_foamliu.int8"
    ops = {node.op_type for node in onnx.load(int8_dir / INT8_EMBEDDER).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def _activation_types(path: Path) -> set[int]:
    """The element types of the zero points the graph's QuantizeLinear nodes quantize activations to."""
    graph = onnx.load(path).graph
    zero_points = {tensor.name: tensor.data_type for tensor in graph.initializer}
    return {zero_points[node.input[2]] for node in graph.node if node.op_type == "QuantizeLinear"}


def test_activations_are_uint8_unless_int8_is_asked_for(int8_dir: Path, faces_dir: Path, tmp_path: Path):
    variants = read_local_manifest(int8_dir).variants
    assert _activation_types(int8_dir / INT8_EMBEDDER) == {onnx.TensorProto.UINT8}
    assert "QDQ U8S8" in variants["mobilefacenet_foamliu.int8"].method
    out = tmp_path / "s8s8"
    code = main(["--model-dir", str(int8_dir), "models", "quantize", "--photos", str(faces_dir / "deepface"),
                 "--count", "2", "--models", "mobilefacenet_foamliu", "--activations", "int8", "--out", str(out)])
    assert code == 0
    assert _activation_types(out / INT8_EMBEDDER) == {onnx.TensorProto.INT8}
    assert "QDQ S8S8" in read_local_manifest(out).variants["mobilefacenet_foamliu.int8"].method


def test_int8_embeddings_stay_close_to_fp32(int8_dir: Path, tmp_path: Path, faces_dir: Path, pipeline):
    specs = ModelSpecs.from_settings(_settings(int8_dir, tmp_path, "int8"))
    int8 = load_embedder(_settings(int8_dir, tmp_path, "int8"), specs)
    crops = []
    for path in sorted(faces_dir.glob("lfw/*/*_0001.jpg"))[:12]:
        image = read_image_file(str(path), pipeline.settings.image).bgr
        crops.append(pipeline.embedder.crop(image, pipeline.detector.detect(image)[0]))
    fp32_vectors, int8_vectors = pipeline.embedder.run(crops), int8.run(crops)
    cosine = (fp32_vectors * int8_vectors).sum(axis=1)
    assert cosine.min() >= MIN_COSINE and cosine.max() < 1 - 1e-6  # close, and really another model
    # The batch-dynamic rewrite applies to the quantized graph too.
    single = np.concatenate([int8.run([crop]) for crop in crops[:4]])
    assert np.allclose(int8.run(crops[:4]), single, atol=1e-5)


def test_a_missing_int8_variant_is_refused_naming_the_command(int8_dir: Path, model_dir: Path, tmp_path: Path):
    # Only the embedder's variant recorded: int8 must refuse for the detector, never run it at fp32.
    folder = _model_folder(model_dir, tmp_path / "models")
    shutil.copyfile(int8_dir / INT8_EMBEDDER, folder / INT8_EMBEDDER)
    record_variant(folder, read_local_manifest(int8_dir).variants["mobilefacenet_foamliu.int8"])
    with pytest.raises(VariantMissingError, match=r"no int8 variant of yunet_2023mar; build one with "
                       r"`ufme-ray models quantize --models yunet_2023mar --photos"):
        ModelSpecs.from_settings(_settings(folder, tmp_path, "int8"))
    assert ModelSpecs.from_settings(_settings(folder, tmp_path, "fp32")).detector.file.endswith("2023mar.onnx")


def test_the_cli_refuses_to_start_without_the_variant(model_dir: Path, faces_dir: Path, tmp_path: Path, capsys):
    config = tmp_path / "ufme.yaml"
    config.write_text(yaml.safe_dump({"runtime": {"precision": "int8"}}))
    photo = str(faces_dir / "pad/live/" / sorted(os.listdir(faces_dir / "pad/live"))[0])
    assert main(["--config", str(config), "--model-dir", str(model_dir), "analyze", photo]) == 2
    assert "ufme-ray models quantize --models yunet_2023mar" in capsys.readouterr().err


def test_a_corrupt_int8_file_fails_verification_and_loading(int8_dir: Path, model_dir: Path, tmp_path: Path):
    folder = _model_folder(model_dir, tmp_path / "models")
    (folder / LOCAL_MANIFEST).write_text((int8_dir / LOCAL_MANIFEST).read_text())
    for file in (INT8_DETECTOR, INT8_EMBEDDER):
        shutil.copyfile(int8_dir / file, folder / file)
    data = bytearray((folder / INT8_EMBEDDER).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / INT8_EMBEDDER).write_bytes(bytes(data))

    assert main(["--model-dir", str(folder), "models", "verify", "mobilefacenet_foamliu.int8"]) == 1
    settings = _settings(folder, tmp_path, "int8")
    with pytest.raises(ModelCorruptError, match="replace it with `ufme-ray models quantize --models mobilefacenet_foamliu "
                       "--photos"):
        load_embedder(settings, ModelSpecs.from_settings(settings))


def test_only_detectors_and_embedders_are_quantized(int8_dir: Path, faces_dir: Path, capsys):
    before = (int8_dir / LOCAL_MANIFEST).read_text()
    code = main(["--model-dir", str(int8_dir), "models", "quantize", "--photos", str(faces_dir / "pad"),
                 "--models", "mobilefacenet_foamliu", "lightqnet_dm100"])
    assert code == 2
    assert "lightqnet_dm100 is a quality" in capsys.readouterr().err
    assert (int8_dir / LOCAL_MANIFEST).read_text() == before  # checked before anything was built


def test_precision_defaults_to_fp32_and_takes_only_fp32_or_int8(monkeypatch):
    monkeypatch.delenv("UFME_RUNTIME__PRECISION", raising=False)
    assert UfmeSettings.load().runtime.precision == "fp32"
    monkeypatch.setenv("UFME_RUNTIME__PRECISION", "int8")
    assert UfmeSettings.load().runtime.precision == "int8"
    with pytest.raises(ConfigError, match="runtime.precision"):
        UfmeSettings.load(runtime={"precision": "fp16"})


def test_one_variant_can_be_chosen_by_name_keeping_the_other_model_fp32(int8_dir: Path, tmp_path: Path):
    """How to run only the int8 detector: name its variant; runtime.precision stays fp32."""
    settings = UfmeSettings(model_dir=int8_dir, data_dir=tmp_path, models={"detector": "yunet_2023mar.int8"})
    specs = ModelSpecs.from_settings(settings)
    assert (specs.detector.file, specs.embedder.file) == (INT8_DETECTOR, "mobilefacenet_foamliu.onnx")


@pytest.mark.parametrize(
    ("mix", "files"),
    [
        ("fp32", ("face_detection_yunet_2023mar.onnx", "mobilefacenet_foamliu.onnx")),
        ("int8", (INT8_DETECTOR, INT8_EMBEDDER)),
        ("int8-detector", (INT8_DETECTOR, "mobilefacenet_foamliu.onnx")),
        ("int8-embedder", ("face_detection_yunet_2023mar.onnx", INT8_EMBEDDER)),
    ],
)
def test_the_benchmarks_precision_mixes_select_the_files(int8_dir: Path, tmp_path: Path, mix: str, files: tuple):
    base = UfmeSettings(model_dir=int8_dir, data_dir=tmp_path)
    specs = ModelSpecs.from_settings(UfmeSettings(model_dir=int8_dir, data_dir=tmp_path, **precision_mix(mix, base)))
    assert (specs.detector.file, specs.embedder.file) == files
    with pytest.raises(ValueError, match="unknown precision mix 'fp16'"):
        precision_mix("fp16", base)
