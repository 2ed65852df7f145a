"""The `ufme-ray` command run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def run(*args: str, model_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "UFME_MODEL_DIR": str(model_dir)}
    return subprocess.run([sys.executable, "-m", "ufme_ray.cli", *args], capture_output=True, text=True, env=env, timeout=120)


def test_analyze_prints_json_per_image(model_dir: Path, faces_dir: Path):
    result = run(
        "analyze", "--compact",
        str(faces_dir / "pad/print/silentface_image_F1.jpg"),
        str(faces_dir / "deepface/_multi_face/couple.jpg"),
        model_dir=model_dir,
    )
    assert result.returncode == 0, result.stderr
    printed, couple = (json.loads(line) for line in result.stdout.splitlines())
    assert len(printed["faces"]) == 1 and printed["faces"][0]["gates"]["liveness"]["status"] == "fail"
    assert len(couple["faces"]) == 2
    assert couple["thresholds"]["similarity_min"] == 0.45


def test_analyze_bad_file_reports_and_fails(model_dir: Path, tmp_path: Path):
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    result = run("analyze", str(junk), model_dir=model_dir)
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "unsupported_image_type"


def test_compare(model_dir: Path, faces_dir: Path):
    result = run("compare", str(faces_dir / "deepface/id01/img1.jpg"), str(faces_dir / "deepface/id01/img10.jpg"), model_dir=model_dir)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["match"] is True and answer["similarity"] > 0.55


def test_models_verify_catches_a_flipped_byte(model_dir: Path, tmp_path: Path):
    for model in model_dir.glob("*.onnx"):
        shutil.copy(model, tmp_path / model.name)
    assert run("models", "verify", model_dir=tmp_path).returncode == 0
    target = tmp_path / "mobilefacenet_foamliu.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    result = run("models", "verify", model_dir=tmp_path)
    assert result.returncode == 1
    assert any(line.startswith("corrupt") and "mobilefacenet_foamliu" in line for line in result.stdout.splitlines())
    # Loading the corrupt model is refused with the checksum named, never silently used.
    refused = run("compare", "a.jpg", "b.jpg", model_dir=tmp_path)
    assert refused.returncode == 2 and "sha256" in refused.stderr


def test_models_verify_reports_missing(model_dir: Path, tmp_path: Path):
    shutil.copy(model_dir / "face_detection_yunet_2023mar.onnx", tmp_path)
    result = run("models", "verify", model_dir=tmp_path)
    assert result.returncode == 2
    assert any(line.startswith("missing") and "mobilefacenet_foamliu" in line for line in result.stdout.splitlines())


def test_bad_config_is_a_clear_error(model_dir: Path, tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("thresholds: {similarity_min: 7}\n")
    result = run("--config", str(config), "models", "list", model_dir=model_dir)
    assert result.returncode == 2
    assert "thresholds.similarity_min" in result.stderr


def test_calibrate_gives_thresholds_within_the_target_far(model_dir: Path, faces_dir: Path, tmp_path: Path):
    config = tmp_path / "ufme.yaml"
    config.write_text("gallery: {num_shards: 3}\n")
    calibration = tmp_path / "calibration.json"
    result = run(
        "calibrate", "--faces", str(faces_dir / "lfw"), "--far", "1e-2", "1e-3",
        "--write-config", str(config), "--write-calibration", str(calibration), model_dir=model_dir,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(("0.01", "0.001"))]
    assert len(rows) == 2
    for target, threshold, tar, measured in rows:
        assert float(measured) <= float(target)
        assert float(tar) >= 0.97
    import yaml

    written = yaml.safe_load(config.read_text())
    assert written["gallery"] == {"num_shards": 3}  # the rest of the file survives
    assert written["thresholds"]["similarity_min"] == round(float(rows[-1][1]), 4)
    saved = json.loads(calibration.read_text())
    assert saved["impostor_pairs"] > 50_000 and len(saved["grid"]) == len(saved["impostor_far"])
