"""What the orchestration needs from the stages and the gallery (Serve handles in production,
in-process models in tests)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.galleries import GalleryRecord
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

    async def sessions(self) -> list[dict]:
        """Per stage, `{stage, models}`: the execution providers each of its model sessions got,
        most preferred first, as one replica of the stage reports them."""
        ...


class Gallery(Protocol):
    """The gallery in galleries and subject ids (the shards' keys stay below it)."""

    async def enrol(
        self, gallery_id: str, generation: int, subject_id: str, vector: np.ndarray, quality: float, *,
        request: bytes | None = None, duplicates: DuplicateCheck | None = None,
    ) -> dict:
        """{template_id, shard, seq, duplicate_of: Candidate | None}. Screened under `duplicates`
        within the gallery as one step with the write; refused as a duplicate: template_id None. A
        `request` key already acknowledged answers its first template (RequestKeyReusedError for
        another request); a `generation` of the gallery that was erased raises NoSuchGalleryError
        (gallery.galleries)."""
        ...

    async def delete(self, gallery_id: str, subject_id: str) -> list[int]: ...

    async def templates(self, gallery_id: str, subject_id: str) -> list[tuple[int, float, float]]: ...

    async def subject_scores(
        self, gallery_id: str, subject_id: str, queries: np.ndarray
    ) -> list[list[tuple[int, float]]]: ...

    async def search(self, queries: np.ndarray, top_k: int, galleries: list[str]) -> list[list[Candidate]]: ...

    async def change_gallery(self, event: GalleryEvent) -> GalleryRecord | None: ...

    async def gallery(self, gallery_id: str) -> GalleryRecord | None: ...

    async def galleries(self) -> list[GalleryRecord]: ...

    async def erase_gallery(self, gallery_id: str, generation: int) -> int: ...

    async def gallery_counts(self, gallery_id: str) -> list[dict]: ...

    async def list_subjects(self, gallery_id: str, offset: int, limit: int) -> list[str]: ...

    async def status(self) -> list[dict]: ...


class Counter(Protocol):
    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None: ...


class Histogram(Protocol):
    def observe(self, value: float, tags: dict[str, str] | None = None) -> None: ...


class Metrics(Protocol):
    gate_rejections: Counter
    faces_per_image: Histogram
