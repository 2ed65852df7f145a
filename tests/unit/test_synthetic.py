"""The benchmarks' synthetic face-like gallery: exact size, streamable, reproducible, face-like."""

from __future__ import annotations

import numpy as np
import pytest

from proving.synthetic import IDENTITIES_PER_BLOCK, FaceLikeGallery, subject_id

DIM = 32


@pytest.mark.parametrize("size", [1, 7, 1000, 4 * IDENTITIES_PER_BLOCK + 123])
def test_exact_size_with_identities_grouped_in_order(size):
    gallery = FaceLikeGallery(size, DIM)
    identities = np.concatenate([block.identities for block in gallery.blocks()])
    assert len(gallery) == size == len(identities)
    assert identities[0] == 0 and identities[-1] == gallery.identities - 1
    assert (np.diff(identities) >= 0).all() and (np.diff(identities) <= 1).all()
    assert np.bincount(identities).max() <= 7


def test_any_row_range_is_the_same_rows_as_the_whole():
    gallery = FaceLikeGallery(3 * 4 * IDENTITIES_PER_BLOCK // 2, DIM, seed=3)
    whole = gallery.vectors()
    start, stop = 4 * IDENTITIES_PER_BLOCK - 5, 5 * IDENTITIES_PER_BLOCK + 17  # across a block boundary
    part = list(gallery.blocks(start, stop))
    assert part[0].start == start and part[-1].stop == stop
    np.testing.assert_array_equal(np.concatenate([b.vectors for b in part]), whole[start:stop])


def test_same_seed_same_vectors_other_seed_other_vectors():
    assert np.array_equal(FaceLikeGallery(500, DIM, seed=1).vectors(), FaceLikeGallery(500, DIM, seed=1).vectors())
    assert not np.allclose(FaceLikeGallery(500, DIM, seed=1).vectors(), FaceLikeGallery(500, DIM, seed=2).vectors())


def test_unit_vectors_whose_genuine_pairs_have_the_asked_cosine():
    gallery = FaceLikeGallery(20_000, 128, intra_cos=0.7)
    [block] = list(gallery.blocks(0, 20_000))
    assert block.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(block.vectors, axis=1), 1.0, atol=1e-5)
    same = block.identities[:-1] == block.identities[1:]
    cosines = np.sum(block.vectors[:-1] * block.vectors[1:], axis=1)
    assert abs(cosines[same].mean() - 0.7) < 0.02
    assert abs(cosines[~same].mean()) < 0.02  # impostors: near-orthogonal


def test_probes_are_fresh_samples_nearest_their_own_identity():
    gallery = FaceLikeGallery(4000, 128, seed=5)
    identities, probes = gallery.probes(200, seed=9)
    vectors = gallery.vectors()
    labels = np.concatenate([b.identities for b in gallery.blocks()])
    nearest = labels[(probes @ vectors.T).argmax(axis=1)]
    assert ((probes @ vectors.T).max(axis=1) < 0.999).all()  # not copies of enrolled templates
    assert np.mean(nearest == identities) > 0.95
    assert subject_id(int(identities[0])) == f"subject-{int(identities[0]):09d}"
