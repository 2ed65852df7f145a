"""Gallery test helpers: an object store on each backend, small face-like vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ufme_ray.gallery.storage import ObjectStore, open_storage


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty object store, on file:// and on the session's S3 server."""
    if request.param == "file":
        return open_storage((tmp_path / "store").as_uri())
    return open_storage(request.getfixturevalue("s3_uri"))


@pytest.fixture
def file_store(tmp_path: Path) -> ObjectStore:
    return open_storage((tmp_path / "store").as_uri())


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def face_like(rng: np.random.Generator, identities: int, per_identity: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: `per_identity` noisy samples around each identity's centre."""
    centres = unit_vectors(rng, identities, dim)
    labels = np.repeat(np.arange(identities), per_identity)
    samples = centres[labels] + unit_vectors(rng, len(labels), dim)
    return samples / np.linalg.norm(samples, axis=1, keepdims=True), labels
