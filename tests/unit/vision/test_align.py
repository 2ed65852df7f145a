from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ufme_ray.vision.align import ARCFACE_TEMPLATE_112, align_arcface, similarity_transform


@settings(max_examples=200, deadline=None)
@given(
    angle=st.floats(-np.pi, np.pi),
    scale=st.floats(0.05, 20),
    tx=st.floats(-1000, 1000),
    ty=st.floats(-1000, 1000),
)
def test_recovers_an_exact_similarity(angle, scale, tx, ty):
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = ARCFACE_TEMPLATE_112
    dst = src @ (scale * rotation).T + [tx, ty]
    matrix = similarity_transform(src, dst)
    mapped = src @ matrix[:, :2].T + matrix[:, 2]
    assert np.allclose(mapped, dst, atol=1e-6 * max(1.0, scale * 100))


def test_never_reflects():
    mirrored = ARCFACE_TEMPLATE_112 * [-1, 1]
    matrix = similarity_transform(ARCFACE_TEMPLATE_112, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_aligned_crop_puts_landmarks_on_the_template():
    image = np.zeros((400, 400, 3), np.uint8)
    landmarks = ARCFACE_TEMPLATE_112 * 2.5 + [60, 40]
    for x, y in landmarks:
        image[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    crop = align_arcface(image, landmarks)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE_112:
        assert crop[int(round(y)), int(round(x))].max() > 0
