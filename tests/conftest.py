"""Session-wide fixtures: where ../shared is, and settings that point at its real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The test cluster runs with token auth, started like `ufme-ray up` starts one; Ray reads the mode
# when it is first imported, so it is set before any test module imports ray.
os.environ["RAY_AUTH_MODE"] = "token"

pytest_plugins: list[str] = ["tests.fixtures.s3", "tests.fixtures.redis"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("UFME_SHARED_DIR", REPO_ROOT.parent / "shared"))
MODEL_DIR = Path(os.environ.get("UFME_MODEL_DIR", SHARED_DIR / "models"))
FACES_DIR = SHARED_DIR / "faces"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (MODEL_DIR / "mobilefacenet_foamliu.onnx").exists():
        pytest.fail(f"the real models are needed: set UFME_MODEL_DIR (looked in {MODEL_DIR})")
    return MODEL_DIR


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not (FACES_DIR / "lfw").is_dir():
        pytest.fail(f"the real face photos are needed in {FACES_DIR} (../shared/faces beside the repo)")
    return FACES_DIR
