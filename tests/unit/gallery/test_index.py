from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ufme_ray.config import IndexSettings
import faiss

from ufme_ray.gallery.index import (
    BuiltIndex,
    build_index,
    choose_params,
    deserialize,
    l2_normalise,
    nprobe_for,
    serialize,
)
from tests.unit.gallery.conftest import face_like

IVF = IndexSettings(exact_max_vectors=500, pq_bytes_per_vector=8, nprobe=64, rerank_candidates=50)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_params_follow_gallery_size() -> None:
    settings = IndexSettings()
    assert choose_params(50_000, 512, settings).kind == "flat"
    big = choose_params(1_000_000, 512, settings)
    assert (big.kind, big.pq_bytes, big.nlist, big.train_size) == ("ivfpq", 64, 4000, 200_000)
    small = choose_params(100_000, 128, settings)
    assert (small.pq_bytes, small.nlist) == (32, 1265)
    assert small.train_size == min(100_000, 50 * 1265)
    assert choose_params(60_000, 96, IndexSettings(exact_max_vectors=10, nlist=10_000)).nlist == 60_000 // 39
    assert nprobe_for(4000, settings) == 1000 and nprobe_for(4000, IndexSettings(nprobe=9000)) == 4000
    with pytest.raises(ValueError, match="divide"):
        choose_params(100_000, 100, IndexSettings(pq_bytes_per_vector=32))


def test_flat_index_is_exact_and_honours_the_alive_bitmap() -> None:
    rng = np.random.default_rng(1)
    vectors, _ = face_like(rng, 50, 4, 32)
    index = build_index(vectors, np.arange(200) + 1000, IndexSettings())
    assert index.params.kind == "flat"
    queries = vectors[:5]
    scores, rows = index.search(queries, 3)
    np.testing.assert_array_equal(rows, exact_top(vectors, queries, 3))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    alive = np.ones(200, bool)
    alive[:5] = False
    _, rows = index.search(queries, 3, alive=np.packbits(alive, bitorder="little"))
    assert not set(rows.ravel()) & set(range(5))


@pytest.mark.parametrize("rerank_store", ["ram", "mmap"])
def test_ivfpq_with_rerank_matches_exact_search(rerank_store: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    vectors, labels = face_like(rng, 500, 4, 32)
    path = tmp_path / "rerank.npy" if rerank_store == "mmap" else None
    index = build_index(vectors, np.arange(2000), IVF, rerank_path=path)
    assert index.params.kind == "ivfpq" and index.rerank.code_size == 2 * 32  # float16
    if path is not None:
        assert path.stat().st_size > 2000 * 64 and faiss.read_index(str(path)).ntotal == 2000
    queries = l2_normalise(vectors[labels == 0][:1] + 0.1 * rng.standard_normal((1, 32)).astype(np.float32))
    queries = np.concatenate([queries, vectors[::40]])
    scores, rows = index.search(queries, 10)
    truth = exact_top(vectors, queries, 10)
    assert (rows[:, 0] == truth[:, 0]).mean() >= 0.98
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ vectors.T, rows, axis=1), atol=2e-3)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_ivfpq_alive_bitmap_excludes_rows_and_still_fills_k() -> None:
    rng = np.random.default_rng(3)
    vectors, _ = face_like(rng, 200, 4, 32)
    index = build_index(vectors, np.arange(800), IVF)
    alive = np.ones(800, bool)
    alive[::2] = False
    _, rows = index.search(vectors[:20], 5, alive=np.packbits(alive, bitorder="little"))
    assert (rows >= 0).all() and (rows % 2 == 1).all()


def test_serialisation_round_trip() -> None:
    rng = np.random.default_rng(4)
    vectors, _ = face_like(rng, 200, 4, 32)
    index = build_index(vectors, np.arange(800), IVF)
    parts = deserialize(serialize(index.index)), deserialize(serialize(index.rerank))
    again = BuiltIndex(index.params, parts[0], index.ids, parts[1], IVF)
    queries = vectors[:10]
    np.testing.assert_array_equal(index.search(queries, 5)[1], again.search(queries, 5)[1])
    sizes = again.resident_bytes()
    assert sizes["codes_and_ids"] == 800 * (8 + 8)
    assert sizes["rerank"] == 800 * 32 * 2
    np.testing.assert_allclose(again.vectors(0, 800), vectors, atol=1e-3)


def test_empty_index_and_small_k() -> None:
    index = build_index(np.empty((0, 8), np.float32), np.empty(0, np.int64), IndexSettings())
    scores, rows = index.search(np.ones((2, 8), np.float32) / np.sqrt(8), 3)
    assert (rows == -1).all() and np.isneginf(scores).all()
