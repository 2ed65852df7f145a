"""Shard index building and search: exact while small, IVF-PQ with an exact rerank once large.

A `BuiltIndex` is row-addressed: row r holds the r-th vector given to `build_index`, and FAISS
stores r as the vector's id. Callers keep their own row -> template map (`BuiltIndex.ids`), and
pass an "alive" bitmap over rows to exclude deleted templates inside FAISS itself, so a search
returns k live results whatever was deleted.

Scores are cosine similarities: vectors and queries are L2-normalised, the flat index is inner
product, and IVF-PQ candidates (ranked by L2 on their PQ codes, equivalent on unit vectors) are
re-scored exactly from float16 copies of the vectors (the rerank store), because PQ alone tops
out far below the recall the engine needs. Search, selection of live rows and rerank all run
inside FAISS, so the wrapper adds only a few Python calls per batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from ufme_ray.config import IndexSettings

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivfpq"]
_ADD_CHUNK = 65_536
_MIN_POINTS_PER_CENTROID = 39  # below this FAISS k-means warns and centroids are poor
_PQ_CENTROIDS = 256  # 8-bit PQ: each sub-quantiser needs at least this many training vectors


@dataclasses.dataclass(frozen=True)
class IndexParams:
    """The build-time choices, recorded in the snapshot manifest."""

    kind: IndexKind
    dim: int
    nlist: int = 0
    pq_bytes: int = 0
    train_size: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "IndexParams":
        return cls(**data)


def choose_params(n: int, dim: int, settings: IndexSettings) -> IndexParams:
    """Flat up to `exact_max_vectors` (or below 256 vectors), else IVF-PQ sized from n.

    nlist defaults to 4·sqrt(n) (1M vectors -> 4000 lists), at most n/39 so every centroid has
    enough training points; the training sample is 50 points per list, capped by
    `train_sample_max` and n. Raises ValueError if the PQ code size does not divide `dim`.
    """
    if n <= settings.exact_max_vectors or n < _PQ_CENTROIDS:
        return IndexParams(kind="flat", dim=dim)
    pq_bytes = settings.pq_bytes_per_vector or (32 if dim <= 128 else 64)
    if dim % pq_bytes != 0:
        raise ValueError(f"index.pq_bytes_per_vector={pq_bytes} must divide the embedding dim {dim}")
    nlist = settings.nlist or round(4 * math.sqrt(n))
    nlist = max(1, min(nlist, n // _MIN_POINTS_PER_CENTROID))
    train_size = min(n, settings.train_sample_max, max(50 * nlist, 256 * _MIN_POINTS_PER_CENTROID))
    return IndexParams(kind="ivfpq", dim=dim, nlist=nlist, pq_bytes=pq_bytes, train_size=train_size)


def nprobe_for(nlist: int, settings: IndexSettings) -> int:
    """IVF lists probed per query: the setting, or a quarter of nlist (face embeddings spread
    almost uniformly, so IVF needs many probes for recall@1 >= 0.99); never more than nlist."""
    return max(1, min(settings.nprobe or nlist // 4, nlist))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise unit vectors as C-contiguous float32. Raises ValueError for a zero or non-finite row."""
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"expected a (n, d) array, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if not np.isfinite(norms).all() or (norms == 0).any():
        raise ValueError("vectors must be finite and non-zero")
    return array / norms


class BuiltIndex:
    """A built index over rows 0..n-1, with `ids[r]` the template id of row r.

    Kinds: "flat" is an exact IndexFlatIP. "ivfpq" is an IndexIVFPQ (L2 on PQ codes, equal to
    cosine ranking on unit vectors) whose top `rerank_candidates` are re-scored exactly by FAISS
    `IndexRefine` from `rerank`, an fp16 IndexScalarQuantizer (in RAM, or memory-mapped from a
    local file). Search is thread-safe (FAISS releases the GIL); the object is never mutated.
    """

    def __init__(
        self,
        params: IndexParams,
        index: faiss.Index,
        ids: np.ndarray,
        rerank: faiss.IndexScalarQuantizer | None,
        settings: IndexSettings,
    ) -> None:
        if index.ntotal != len(ids) or (rerank is not None and rerank.ntotal != len(ids)):
            raise ValueError(
                f"index parts disagree: {index.ntotal} indexed, {len(ids)} ids, "
                f"{None if rerank is None else rerank.ntotal} rerank vectors"
            )
        if (params.kind == "ivfpq") != (rerank is not None):
            raise ValueError(f"a {params.kind} index {'needs' if rerank is None else 'takes no'} rerank vectors")
        self.params = params
        self.index = index
        self.ids = ids
        self.rerank = rerank
        # IndexRefine only borrows the two indexes; the attributes above keep them alive.
        self._refine = None if rerank is None else faiss.IndexRefine(index, rerank)
        self._nprobe = nprobe_for(params.nlist, settings)
        self._rerank_candidates = settings.rerank_candidates

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def search(
        self, queries: np.ndarray, k: int, *, alive: np.ndarray | None = None, within: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: (cosine scores (n, k) float32, rows (n, k) int64), best first.

        `queries` must be L2-normalised float32. `alive` is a packed little-endian bitmap over rows
        (np.packbits(..., bitorder="little")); rows whose bit is 0 are never returned. `within`
        (start, stop) limits the search to that range (one gallery's rows). Missing results are
        row -1 with score -inf.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        nq = len(queries)
        if self.ntotal == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        selectors = []
        if alive is not None:
            selectors.append(faiss.IDSelectorBitmap(self.ntotal, faiss.swig_ptr(alive)))
        if within is not None and within != (0, self.ntotal):
            selectors.append(faiss.IDSelectorRange(*within))
        # The selectors must outlive the search: FAISS holds bare pointers to them.
        selector = selectors[0] if len(selectors) == 1 else faiss.IDSelectorAnd(*selectors) if selectors else None
        if self._refine is None:
            params = None if selector is None else faiss.SearchParameters(sel=selector)
            scores, rows = self.index.search(queries, k, params=params)
        else:
            ivf_params = faiss.SearchParametersIVF(nprobe=self._nprobe, sel=selector)
            params = faiss.IndexRefineSearchParameters(
                k_factor=max(k, self._rerank_candidates) / k, base_index_params=ivf_params
            )
            distances, rows = self._refine.search(queries, k, params=params)
            scores = 1.0 - distances / 2.0  # squared L2 between unit vectors -> cosine
        scores[rows < 0] = -np.inf
        return scores, rows

    def vectors(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 as float32 (exact for flat, the float16 rerank copy for IVF-PQ)."""
        source = self.index if self.rerank is None else self.rerank
        return source.reconstruct_n(start, stop - start)

    def resident_bytes(self) -> dict[str, int]:
        """Memory held, by part: FAISS codes + ids, other FAISS structures, id map, rerank store."""
        dim = self.params.dim
        if self.rerank is None:
            codes_ids, other, rerank = self.ntotal * dim * 4, 0, 0
        else:
            ivf = self.index
            codes_ids = ivf.ntotal * (ivf.code_size + 8)  # inverted lists hold a code and an int64 id
            other = ivf.nlist * dim * 4 + ivf.pq.M * ivf.pq.ksub * ivf.pq.dsub * 4
            other += ivf.precomputed_table.size() * 4
            rerank = self.ntotal * self.rerank.code_size
        return {"codes_and_ids": codes_ids, "index_other": other, "id_map": self.ids.nbytes, "rerank": rerank}


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()


def deserialize(data: bytes) -> faiss.Index:
    """A FAISS index from bytes (the flat, IVF-PQ or rerank part of a snapshot)."""
    return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))


def read_mmap(path: str | Path) -> faiss.Index:
    """A rerank store from a local FAISS file, its vectors memory-mapped rather than read."""
    return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    settings: IndexSettings,
    *,
    rerank_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> BuiltIndex:
    """Build the index for `vectors` (n, d), L2-normalised float32, row r having template id ids[r].

    The kind follows n (`choose_params`). For IVF-PQ the float16 rerank store is written to the
    local FAISS file `rerank_path` and memory-mapped when given, else held in RAM. Vectors are
    added in chunks, so peak memory is the input plus the index plus one chunk.
    `progress(n_rows_done)` is called as rows are added to the index.
    """
    n, dim = vectors.shape
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) != n:
        raise ValueError(f"{n} vectors but {len(ids)} ids")
    params = choose_params(n, dim, settings)
    if params.kind == "flat":
        index = faiss.IndexFlatIP(dim)
        _add_chunked(index, vectors, progress)
        return BuiltIndex(params, index, ids, None, settings)
    index = faiss.IndexIVFPQ(faiss.IndexFlatL2(dim), dim, params.nlist, params.pq_bytes, 8)
    # Residual codes would need a lookup table per probed list, or precomputed tables of
    # nlist·M·256 floats (hundreds of MB at 1M vectors); at hundreds of probes plain PQ codes with
    # one table per query are faster, and measured recall after the exact rerank is the same.
    index.by_residual = False
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(n, size=params.train_size, replace=False))
    logger.info("training IVF%d,PQ%d on %d of %d vectors (d=%d)", params.nlist, params.pq_bytes, len(sample), n, dim)
    index.train(np.ascontiguousarray(vectors[sample]))
    _add_chunked(index, vectors, progress)
    rerank = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
    _add_chunked(rerank, vectors, None)
    if rerank_path is not None:
        faiss.write_index(rerank, str(rerank_path))
        del rerank
        rerank = read_mmap(rerank_path)
    return BuiltIndex(params, index, ids, rerank, settings)


def _add_chunked(index: faiss.Index, vectors: np.ndarray, progress: Callable[[int], None] | None) -> None:
    for start in range(0, len(vectors), _ADD_CHUNK):
        chunk = np.ascontiguousarray(vectors[start : start + _ADD_CHUNK], dtype=np.float32)
        index.add(chunk)
        if progress is not None:
            progress(len(chunk))
