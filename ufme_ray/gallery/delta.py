"""The shard's exact index of the templates enrolled after its snapshot's watermark."""

from __future__ import annotations

import numpy as np

from ufme_ray.gallery.events import EnrolEvent


class Delta:
    """Exact index of the templates enrolled after the snapshot watermark (brute-force BLAS)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.vectors = np.zeros((64, dim), np.float32)
        self.template_ids = np.zeros(64, np.int64)
        self.seqs = np.zeros(64, np.int64)
        self.quality = np.zeros(64, np.float32)
        self.enrolled_at = np.zeros(64, np.float64)
        self.alive = np.zeros(64, bool)
        self.subjects: list[str] = []
        self.by_subject: dict[str, list[int]] = {}

    def add(self, seq: int, event: EnrolEvent) -> None:
        if self.n == len(self.alive):
            grow = len(self.alive)
            self.vectors = np.concatenate([self.vectors, np.zeros((grow, self.dim), np.float32)])
            for name in ("template_ids", "seqs", "quality", "enrolled_at", "alive"):
                array = getattr(self, name)
                setattr(self, name, np.concatenate([array, np.zeros(grow, array.dtype)]))
        row = self.n
        self.vectors[row] = event.vector
        self.template_ids[row] = event.template_id
        self.seqs[row] = seq
        self.quality[row] = event.quality
        self.enrolled_at[row] = event.timestamp
        self.alive[row] = True
        self.subjects.append(event.subject_id)
        self.by_subject.setdefault(event.subject_id, []).append(row)
        self.n += 1

    def erase(self, subject_id: str) -> list[int]:
        rows = self.by_subject.pop(subject_id, [])
        self.alive[rows] = False
        self.vectors[rows] = 0.0  # forget the face itself, not only its visibility
        return self.template_ids[rows].tolist()

    def erase_all(self) -> list[int]:
        """Erase every template (its gallery is erased); returns the ids that were live."""
        ids = self.template_ids[: self.n][self.alive[: self.n]].tolist()
        self.alive[:] = False
        self.vectors[:] = 0.0
        self.by_subject.clear()
        return ids

    @property
    def live(self) -> int:
        return int(self.alive[: self.n].sum())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq = len(queries)
        if self.n == 0 or k <= 0:
            return np.full((nq, max(k, 0)), -np.inf, np.float32), np.full((nq, max(k, 0)), -1, np.int64)
        scores = queries @ self.vectors[: self.n].T
        scores[:, ~self.alive[: self.n]] = -np.inf
        take = min(k, self.n)
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        top_scores = np.take_along_axis(scores, top, axis=1)
        rows = np.where(np.isfinite(top_scores), top, -1)
        if take < k:
            pad = ((0, 0), (0, k - take))
            top_scores = np.pad(top_scores, pad, constant_values=-np.inf)
            rows = np.pad(rows, pad, constant_values=-1)
        return top_scores, rows

    def after(self, watermark: int) -> "Delta":
        """A new delta with the live rows whose seq is above `watermark`."""
        kept = Delta(self.dim)
        for row in range(self.n):
            if self.alive[row] and self.seqs[row] > watermark:
                kept.add(
                    int(self.seqs[row]),
                    EnrolEvent(
                        template_id=int(self.template_ids[row]),
                        subject_id=self.subjects[row],
                        vector=self.vectors[row].copy(),
                        quality=float(self.quality[row]),
                        timestamp=float(self.enrolled_at[row]),
                    ),
                )
        return kept
