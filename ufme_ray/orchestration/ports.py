"""What the orchestration needs from the stages and the gallery (Serve handles in production,
in-process models in tests)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.merge import Candidate
from ufme_ray.vision.detector import DetectedFace


class Stages(Protocol):
    async def detect(self, image_bgr: np.ndarray, score_min: float) -> list[DetectedFace]: ...

    async def quality(self, crops: list[np.ndarray]) -> np.ndarray | None: ...

    async def liveness(self, crops: list[list[np.ndarray]]) -> np.ndarray | None: ...

    async def morph(self, crops: list[np.ndarray]) -> np.ndarray | None: ...

    async def embed(self, crops: list[np.ndarray]) -> np.ndarray: ...

    async def up(self) -> bool:
        """Every stage answers."""
        ...


class Gallery(Protocol):
    async def enrol(
        self, subject_id: str, vector: np.ndarray, quality: float, *, request: bytes | None = None,
        duplicates: DuplicateCheck | None = None,
    ) -> dict:
        """{template_id, shard, seq, duplicate_of: Candidate | None}. Screened under `duplicates` as
        one step with the write; refused as a duplicate: template_id None. A `request` key already
        acknowledged answers its first template (RequestKeyReusedError for another request)."""
        ...

    async def delete(self, subject_id: str) -> list[int]: ...

    async def templates(self, subject_id: str) -> list[tuple[int, float, float]]: ...

    async def subject_scores(self, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]: ...

    async def search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]: ...

    async def status(self) -> list[dict]: ...


class Counter(Protocol):
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...


class Histogram(Protocol):
    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class Metrics(Protocol):
    gate_rejections: Counter
    faces_per_image: Histogram
