"""The orchestration's ports over Serve deployment handles: one call per method, nothing else."""

from __future__ import annotations

import asyncio

import numpy as np

from ufme_ray.gallery.duplicates import DuplicateCheck
from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.galleries import GalleryRecord
from ufme_ray.gallery.merge import Candidate
from ufme_ray.serving.shard_calls import ShardDirectory
from ufme_ray.vision.detector import DetectedFace


class StageHandles:
    """`orchestration.ports.Stages` over the stage deployments."""

    def __init__(self, detector, quality, liveness, morph, embedder):
        self._detector, self._quality, self._liveness, self._morph, self._embedder = (
            detector, quality, liveness, morph, embedder
        )

    async def detect(self, image_bgr: np.ndarray, score_min: float) -> list[DetectedFace]:
        return await self._detector.detect.remote(image_bgr, score_min)

    async def quality(self, crops: list[np.ndarray]) -> np.ndarray | None:
        return await self._quality.score.remote(crops)

    async def liveness(self, crops: list[list[np.ndarray]]) -> np.ndarray | None:
        return await self._liveness.score.remote(crops)

    async def morph(self, crops: list[np.ndarray]) -> np.ndarray | None:
        return await self._morph.score.remote(crops)

    async def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        return await self._embedder.embed.remote(crops)

    @property
    def _stages(self) -> tuple:
        return self._detector, self._quality, self._liveness, self._morph, self._embedder

    async def up(self) -> bool:
        return all(await asyncio.gather(*(stage.ping.remote() for stage in self._stages)))

    async def sessions(self) -> list[dict]:
        return list(await asyncio.gather(*(stage.status.remote() for stage in self._stages)))


class GalleryHandle:
    """`orchestration.ports.Gallery` over the Searcher deployment, and straight to the shard actors
    for search: a hop less on every identify."""

    def __init__(self, searcher, shards: ShardDirectory):
        self._searcher = searcher
        self._shards = shards

    async def enrol(
        self, gallery_id: str, generation: int, subject_id: str, vector: np.ndarray, quality: float, *,
        request: bytes | None = None, duplicates: DuplicateCheck | None = None,
    ) -> dict:
        return await self._searcher.enrol.remote(
            gallery_id, generation, subject_id, vector, quality, request=request, duplicates=duplicates
        )

    async def delete(self, gallery_id: str, subject_id: str) -> list[int]:
        return await self._searcher.delete.remote(gallery_id, subject_id)

    async def templates(self, gallery_id: str, subject_id: str) -> list[tuple[int, float, float]]:
        return await self._searcher.templates.remote(gallery_id, subject_id)

    async def subject_scores(self, gallery_id: str, subject_id: str, queries: np.ndarray) -> list[list[tuple[int, float]]]:
        return await self._searcher.subject_scores.remote(gallery_id, subject_id, queries)

    async def search(self, queries: np.ndarray, top_k: int, galleries: list[str]) -> list[list[Candidate]]:
        return await self._shards.search(queries, top_k, galleries)

    async def change_gallery(self, event: GalleryEvent) -> GalleryRecord | None:
        return await self._searcher.change_gallery.remote(event)

    async def gallery(self, gallery_id: str) -> GalleryRecord | None:
        return await self._searcher.gallery.remote(gallery_id)

    async def galleries(self) -> list[GalleryRecord]:
        return await self._searcher.galleries.remote()

    async def erase_gallery(self, gallery_id: str, generation: int) -> int:
        return await self._searcher.erase_gallery.remote(gallery_id, generation)

    async def gallery_counts(self, gallery_id: str) -> list[dict]:
        return await self._searcher.gallery_counts.remote(gallery_id)

    async def list_subjects(self, gallery_id: str, offset: int, limit: int) -> list[str]:
        return await self._searcher.list_subjects.remote(gallery_id, offset, limit)

    async def status(self) -> list[dict]:
        return await self._searcher.status.remote()
