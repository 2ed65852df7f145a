"""LightQNet quality scores on real LFW photos, clean and degraded."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ufme_ray.vision.image import read_image_file


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


def test_no_crops_give_no_scores(pipeline):
    scores = pipeline.quality.run([])
    assert scores.shape == (0,) and scores.dtype == np.float32
