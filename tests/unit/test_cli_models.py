"""Exit codes of `ufme-ray models verify|pull`, through the CLI's entry point, on real model files.

verify: 0 every model ok, 1 any file corrupt, 2 nothing corrupt but something missing or
unverifiable. pull: 0 every model downloaded or already there, 1 any failed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import MODEL_DIR
from ufme_ray.cli import main
from ufme_ray.models.manifest import packaged_manifest

MANIFEST = packaged_manifest()
YUNET = MANIFEST.get("yunet_2023mar")
LIGHTQNET = MANIFEST.get("lightqnet_dm100")  # mirror-only
BAD = MANIFEST.get("minifasnet_v2")  # corrupt on the mirror


def _copy(spec, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(MODEL_DIR / spec.file, folder / spec.file))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def models(model_dir: Path, *args: str, config: Path | None = None) -> int:
    """`ufme-ray [--config C] --model-dir D models ARGS…`, returning its exit code."""
    options = ["--config", str(config)] if config else []
    return main([*options, "--model-dir", str(model_dir), "models", *args])


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A mirror folder: good copies of YUNET and LIGHTQNET, BAD's file with one byte flipped."""
    folder = tmp_path / "mirror"
    for spec in (YUNET, LIGHTQNET, BAD):
        _copy(spec, folder)
    _flip_byte(folder / BAD.file)
    return folder


def test_verify_is_0_when_every_model_is_ok(tmp_path: Path) -> None:
    _copy(YUNET, tmp_path)
    _copy(LIGHTQNET, tmp_path)

    assert models(tmp_path, "verify", YUNET.name, LIGHTQNET.name) == 0


def test_verify_is_1_when_any_file_is_corrupt_even_with_one_missing(tmp_path: Path) -> None:
    _copy(YUNET, tmp_path)
    _flip_byte(_copy(LIGHTQNET, tmp_path))

    assert models(tmp_path, "verify", YUNET.name, LIGHTQNET.name, BAD.name) == 1


def test_verify_is_2_when_a_file_is_missing_and_none_corrupt(tmp_path: Path) -> None:
    _copy(YUNET, tmp_path)

    assert models(tmp_path, "verify", YUNET.name, BAD.name) == 2


def test_verify_is_2_when_a_model_has_no_sha256(tmp_path: Path) -> None:
    """A file the manifest cannot vouch for is unverifiable: not corrupt, not ok."""
    entry = YUNET.model_dump(include={"kind", "family", "licence", "preprocess", "default_threshold"}, mode="json")
    entry.update(file="unhashed.onnx", sha256=None, distribution="built by the test")
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"models": {"unhashed": entry}}))
    config = tmp_path / "ufme.yaml"
    config.write_text(yaml.safe_dump({"model_manifest": str(extra)}))
    _copy(YUNET, tmp_path)
    shutil.copyfile(tmp_path / YUNET.file, tmp_path / "unhashed.onnx")

    assert models(tmp_path, "verify", YUNET.name, "unhashed", config=config) == 2


def test_pull_is_0_when_every_model_is_installed_or_already_there(tmp_path: Path, mirror: Path) -> None:
    target = tmp_path / "models"
    _copy(YUNET, target)

    assert models(target, "pull", YUNET.name, LIGHTQNET.name, "--from", str(mirror), "--quiet") == 0
    assert models(target, "verify", YUNET.name, LIGHTQNET.name) == 0


def test_pull_is_1_when_any_model_fails(tmp_path: Path, mirror: Path) -> None:
    target = tmp_path / "models"

    assert models(target, "pull", YUNET.name, BAD.name, "--from", str(mirror), "--quiet") == 1
    # The good one is still installed; the bad download left nothing behind.
    assert sorted(path.name for path in target.iterdir()) == [YUNET.file]
