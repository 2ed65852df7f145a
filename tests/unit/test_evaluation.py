from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ufme_ray.evaluation import open_set_identification, operating_point, threshold_at_far


@given(
    impostor=st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=300),
    far=st.sampled_from([0.0, 1e-3, 1e-2, 0.1, 0.5]),
)
def test_threshold_meets_the_target_far(impostor, far):
    scores = np.array(impostor)
    threshold = threshold_at_far(scores, far)
    assert (scores >= threshold).mean() <= far + 1e-12


def test_operating_point_on_known_scores():
    genuine = np.array([0.9, 0.8, 0.7, 0.3])
    impostor = np.linspace(-0.5, 0.5, 1000)
    point = operating_point(genuine, impostor, 1e-2)
    assert 0.489 < point.threshold < 0.492
    assert point.tar == 0.75 and point.measured_far <= 0.01


def test_open_set_identification():
    gallery = np.eye(3)
    probes = np.array([[0.9, 0.1, 0], [0.1, 0.9, 0], [0, 0.2, 0.5], [0.3, 0.3, 0.3]])
    result = open_set_identification(gallery, ["a", "b", "c"], probes, ["a", "b", "c", None], fpir=0.0)
    assert result.rank1 == 1.0
    assert result.fpir == 0.0
    assert result.fnir == 0.0  # unknown top score 0.3 < every known probe's top score


def test_float32_scores_never_exceed_the_target_far():
    """A float64 threshold nudged above a float32 score rounds back onto it; ours must not."""
    rng = np.random.default_rng(0)
    impostor = rng.normal(0, 0.1, 80_000).astype(np.float32)
    for far in (1e-2, 1e-3, 1e-4):
        point = operating_point(np.ones(3, np.float32), impostor, far)
        assert point.measured_far <= far
        assert (impostor >= np.float32(point.threshold)).mean() <= far
