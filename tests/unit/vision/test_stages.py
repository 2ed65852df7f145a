"""Quality, liveness and embedding on real photos with the default model set."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ufme_ray.evaluation import pair_scores
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.pipeline import Pipeline


def main_face(pipeline: Pipeline, path: Path):
    return pipeline.analyze_decoded([read_image_file(str(path), pipeline.settings.image)])[0].main_face()


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


def test_compare_decides_at_the_threshold(pipeline, faces_dir: Path):
    same = pipeline.compare(
        (faces_dir / "deepface/id01/img1.jpg").read_bytes(), (faces_dir / "deepface/id01/img10.jpg").read_bytes()
    )
    other = next((faces_dir / "deepface/id02").glob("*.jpg"))
    different = pipeline.compare((faces_dir / "deepface/id01/img1.jpg").read_bytes(), other.read_bytes())
    assert same.match and same.similarity > 0.55
    assert not different.match and different.similarity < 0.2


def test_pad_samples(pipeline, faces_dir: Path):
    live = main_face(pipeline, faces_dir / "pad/live/silentface_image_T1.jpg")
    printed = main_face(pipeline, faces_dir / "pad/print/silentface_image_F1.jpg")
    replay = main_face(pipeline, faces_dir / "pad/replay/silentface_image_F2.jpg")
    assert live.liveness >= pipeline.thresholds.liveness_min and live.gates["liveness"].status == "pass"
    assert printed.liveness < 0.5 and printed.gates["liveness"].status == "fail"
    assert replay.liveness < 0.5 and replay.gates["liveness"].status == "fail"
    assert not printed.accepted and printed.rejected_by == ["liveness"]


def test_quality_drops_under_blur_and_noise(pipeline, faces_dir: Path):
    rng = np.random.default_rng(1)
    clean, blurred, noisy = [], [], []
    for path in sorted(faces_dir.glob("lfw/*/*_0001.jpg"))[:30]:
        image = read_image_file(str(path), pipeline.settings.image).bgr
        face = pipeline.detector.detect(image)[0]
        score = lambda img: float(pipeline.quality.run([pipeline.quality.crop(img, face)])[0])  # noqa: E731
        clean.append(score(image))
        blurred.append(score(cv2.GaussianBlur(image, (0, 0), 3)))
        noisy.append(score(np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)))
    assert np.mean(blurred) < np.mean(clean) - 0.08
    assert np.mean(noisy) < np.mean(clean) - 0.15
    assert (np.array(noisy) < np.array(clean)).mean() >= 0.9


def test_batched_inference_equals_one_by_one(pipeline, faces_dir: Path):
    """The batch-dynamic graph rewrite must not change a single output."""
    images = [read_image_file(str(p), pipeline.settings.image).bgr for p in sorted(faces_dir.glob("lfw/A*/*_0001.jpg"))]
    located = [(img, pipeline.detector.detect(img)[0]) for img in images]
    assert len(located) >= 4
    for stage in (pipeline.embedder, pipeline.liveness, pipeline.quality):
        crops = [stage.crop(img, face) for img, face in located]
        batched = stage.run(crops)
        single = np.concatenate([stage.run([crop]) for crop in crops])
        assert np.allclose(batched, single, atol=1e-5)


def test_analyze_many_keeps_slots_for_bad_images(pipeline, faces_dir: Path):
    good = (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()
    results = pipeline.analyze_many([good, b"not an image", good[:500]])
    assert len(results[0].faces) == 1
    assert results[1].code == "unsupported_image_type"
    assert results[2].code == "corrupt_image"


def test_no_face(pipeline):
    blank = cv2.imencode(".png", np.full((300, 300, 3), 200, np.uint8))[1].tobytes()
    assert pipeline.analyze(blank).faces == []
    from ufme_ray.vision.pipeline import NoFaceError

    with pytest.raises(NoFaceError):
        pipeline.compare(blank, blank)
