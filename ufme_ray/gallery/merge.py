"""Merging per-shard search results into one ranked, subject-level answer. Pure functions."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from ufme_ray.gallery.galleries import DEFAULT_GALLERY, split_key
from ufme_ray.gallery.shard_types import SearchHit


@dataclass(frozen=True)
class Candidate:
    """A subject's score for one probe: its best template's cosine similarity. Inside the shards
    `subject_id` is the subject's key (`galleries.subject_key`); `named` splits it."""

    subject_id: str
    score: float
    template_id: int
    gallery_id: str = DEFAULT_GALLERY

    def named(self) -> "Candidate":
        """This candidate with its gallery and subject id apart (from a subject key)."""
        gallery_id, subject_id = split_key(self.subject_id)
        return replace(self, subject_id=subject_id, gallery_id=gallery_id)


def merge_subjects(per_shard: Iterable[Sequence[SearchHit]], top_k: int) -> list[Candidate]:
    """The top_k subjects over all shards' template hits for one probe, best first.

    A subject's score is the best of its templates (all of a subject's templates live on one
    shard, but a shard may return several of them). Ties break by subject id for stable output.
    """
    best: dict[str, Candidate] = {}
    for hits in per_shard:
        for hit in hits:
            current = best.get(hit.subject_id)
            if current is None or hit.score > current.score:
                best[hit.subject_id] = Candidate(hit.subject_id, float(hit.score), int(hit.template_id))
    return heapq.nsmallest(top_k, best.values(), key=lambda c: (-c.score, c.subject_id))
