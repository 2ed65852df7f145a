"""The face embedder on real LFW photos: unit vectors that separate people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.vision.conftest import main_face
from ufme_ray.evaluation import pair_scores
from ufme_ray.vision.pipeline import Pipeline


@pytest.fixture(scope="module")
def lfw_sample(pipeline: Pipeline, faces_dir: Path):
    """Embeddings of the first 12 LFW identities with >= 4 photos (4 photos each)."""
    labels, vectors = [], []
    identities = [d for d in sorted((faces_dir / "lfw").iterdir()) if len(list(d.glob("*.jpg"))) >= 4][:12]
    for identity in identities:
        for path in sorted(identity.glob("*.jpg"))[:4]:
            labels.append(identity.name)
            vectors.append(main_face(pipeline, path).embedding)
    return labels, np.stack(vectors)


def test_embeddings_are_unit_vectors(lfw_sample, pipeline):
    _, vectors = lfw_sample
    assert vectors.shape[1] == pipeline.embedder.dim == 128
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_person_scores_clearly_above_different_people(lfw_sample, pipeline):
    genuine, impostor = pair_scores(lfw_sample[1], lfw_sample[0])
    assert genuine.mean() > 0.55 and impostor.mean() < 0.1
    assert genuine.mean() - impostor.mean() > 0.45
    threshold = pipeline.thresholds.similarity_min
    assert (genuine >= threshold).mean() >= 0.85
    assert (impostor >= threshold).mean() <= 0.005


def test_no_crops_give_no_vectors(pipeline):
    assert pipeline.embedder.run([]).shape == (0, 128)
