"""Synthetic face-like templates for the benchmarks: identities with a few templates each.

Identity centres are uniform on the unit sphere (real face embeddings spread almost uniformly).
Each identity has 1..7 templates (4 on average); a template is its centre plus isotropic noise
scaled so that two templates of one identity have a mean cosine of `intra_cos` (0.7 by default,
like a good face recogniser's genuine pairs). Probes are fresh samples of enrolled identities.

The gallery is generated in blocks of identities, each from its own seed, so any row range can be
regenerated on its own: a 10M gallery is streamed (enrolled, searched exhaustively) without ever
being held in memory, and the same (size, dim, seed) always gives the same vectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

IDENTITIES_PER_BLOCK = 16_384
MAX_TEMPLATES_PER_IDENTITY = 7
# Independent random streams per block: template counts, centres, noise; and one for probes.
_COUNTS, _CENTRES, _NOISE, _PROBES = range(4)


def subject_id(identity: int) -> str:
    """The subject id the benchmarks enrol identity `identity` under."""
    return f"subject-{identity:09d}"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class Block:
    """Gallery rows start..start+len(identities)-1: each row's identity and unit vector."""

    start: int
    identities: np.ndarray  # int64 (rows,)
    vectors: np.ndarray  # float32 (rows, dim), unit norm

    @property
    def stop(self) -> int:
        return self.start + len(self.identities)


class FaceLikeGallery:
    """`size` templates of dimension `dim`, rows grouped by identity (identity 0's rows first)."""

    def __init__(self, size: int, dim: int, *, intra_cos: float = 0.7, seed: int = 0) -> None:
        if size < 1 or dim < 2 or not 0 < intra_cos < 1:
            raise ValueError(f"need size >= 1, dim >= 2 and 0 < intra_cos < 1, got {size}, {dim}, {intra_cos}")
        self.size = size
        self.dim = dim
        self.seed = seed
        # x = c + s·u with c, u unit vectors: cos(x, c) = 1/sqrt(1+s²), so two samples have 1/(1+s²).
        self._noise = math.sqrt(1.0 / intra_cos - 1.0)
        self._counts = self._template_counts()
        self._block_starts = np.concatenate([[0], np.cumsum([c.sum() for c in self._counts])])
        self.identities = sum(len(c) for c in self._counts)

    def _template_counts(self) -> list[np.ndarray]:
        """Templates per identity, block by block, the last block cut so the total is `size`."""
        counts, total, block = [], 0, 0
        while total < self.size:
            rng = np.random.default_rng([self.seed, _COUNTS, block])
            drawn = np.clip(rng.poisson(3.0, size=IDENTITIES_PER_BLOCK) + 1, 1, MAX_TEMPLATES_PER_IDENTITY)
            kept = np.searchsorted(np.cumsum(drawn), self.size - total, side="left") + 1
            drawn = drawn[:kept]
            drawn[-1] -= max(0, total + int(drawn.sum()) - self.size)
            counts.append(drawn)
            total += int(drawn.sum())
            block += 1
        return counts

    def __len__(self) -> int:
        return self.size

    def _centres(self, block: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, _CENTRES, block])
        return unit_rows(rng.standard_normal((IDENTITIES_PER_BLOCK, self.dim), dtype=np.float32))

    def _sample(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = unit_rows(rng.standard_normal(centres.shape, dtype=np.float32))
        return unit_rows(centres + self._noise * noise).astype(np.float32, copy=False)

    def block(self, index: int) -> Block:
        """Block `index` whole (about 4 × IDENTITIES_PER_BLOCK rows)."""
        counts = self._counts[index]
        local = np.repeat(np.arange(len(counts)), counts)
        vectors = self._sample(self._centres(index)[local], np.random.default_rng([self.seed, _NOISE, index]))
        return Block(int(self._block_starts[index]), local + index * IDENTITIES_PER_BLOCK, vectors)

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[Block]:
        """Rows start..stop-1 in order, as blocks (the first and last cut to the range)."""
        stop = self.size if stop is None else stop
        first = int(np.searchsorted(self._block_starts, start, side="right")) - 1
        for index in range(first, len(self._counts)):
            block = self.block(index)
            if block.start >= stop:
                return
            lo, hi = max(start, block.start) - block.start, min(stop, block.stop) - block.start
            yield Block(block.start + lo, block.identities[lo:hi], block.vectors[lo:hi])

    def vectors(self) -> np.ndarray:
        """The whole gallery as one (size, dim) float32 array (for galleries that fit in memory)."""
        vectors = np.empty((self.size, self.dim), np.float32)
        for block in self.blocks():
            vectors[block.start : block.stop] = block.vectors
        return vectors

    def probes(self, count: int, *, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """`count` fresh samples of enrolled identities: (identities int64, unit vectors float32)."""
        rng = np.random.default_rng([self.seed, _PROBES, seed])
        identities = np.sort(rng.choice(self.identities, size=count, replace=count > self.identities))
        centres = np.empty((count, self.dim), np.float32)
        blocks = identities // IDENTITIES_PER_BLOCK
        for block in np.unique(blocks):
            chosen = blocks == block
            centres[chosen] = self._centres(int(block))[identities[chosen] % IDENTITIES_PER_BLOCK]
        order = rng.permutation(count)  # probes in random order, not grouped by block
        return identities[order], self._sample(centres[order], rng)
