"""The enrolment sequencer: one named actor per cluster that every screened enrolment passes through.

The duplicate search and the write are one step only if nothing else enrols in between, so
enrolments under a duplicate policy (reject, warn) go through this actor one batch at a time:
search the gallery for the batch's faces, screen them against the gallery and against each other
(`gallery.duplicates.screen`), write the accepted ones to their shards, answer, take the next
batch. Requests that arrive while a batch is in flight form the next one, so the check does not
cost a round trip per enrolment. Enrolments under `allow` skip it. The actor keeps no state of its
own: a restarted one (Ray restarts it) answers as the first did.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import numpy as np
import ray

from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.duplicates import DuplicateCheck, screen
from ufme_ray.gallery.galleries import gallery_of
from ufme_ray.gallery.index import l2_normalise
from ufme_ray.gallery.merge import merge_subjects
from ufme_ray.gallery.routing import shard_for
from ufme_ray.orchestration.errors import GalleryUnavailableError
from ufme_ray.serving.shard_actor import NAMESPACE, shard_handles
from ufme_ray.serving.shard_calls import call_shard

SEQUENCER_NAME = "ufme-enrolment-sequencer"
# Two subjects per probe: when the face's own subject comes first, the best other one is second.
SCREEN_TOP_K = 2


@dataclass(frozen=True)
class EnrolRequest:
    key: str  # the subject's key in its gallery
    generation: int
    vector: np.ndarray
    quality: float
    request: bytes | None
    check: DuplicateCheck

    @property
    def gallery(self) -> str:
        return gallery_of(self.key)


class EnrolmentSequencer:
    def __init__(self, settings_json: str, dim: int, shard_num_cpus: float, shard_resources: dict | None, namespace: str):
        settings = UfmeSettings.model_validate_json(settings_json)
        self._num_shards = settings.gallery.num_shards
        self._connect = lambda: shard_handles(settings, dim, num_cpus=shard_num_cpus, resources=shard_resources, namespace=namespace)
        self._shards = self._connect()
        self._pending: list[tuple[EnrolRequest, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    async def enrol(
        self, key: str, generation: int, vector: np.ndarray, quality: float, request: bytes | None, check: DuplicateCheck
    ) -> dict:
        """{template_id, shard, seq, duplicate_of (keyed)}; template_id is None when refused as a duplicate."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((EnrolRequest(key, generation, vector, quality, request, check), future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            # One gallery and policy per screen (a face is a duplicate only within its gallery; a
            # live-config change mid-batch splits it), in arrival order.
            for gallery, check in dict.fromkeys((item.gallery, item.check) for item, _ in batch):
                group = [(item, future) for item, future in batch if (item.gallery, item.check) == (gallery, check)]
                try:
                    answers = await self._screen_and_write([item for item, _ in group], gallery, check)
                except Exception as exc:  # the search failed: every request of the group learns why
                    answers = [exc] * len(group)
                if any(isinstance(a, GalleryUnavailableError) for a in answers):
                    # A shard actor killed for good is created again by whoever needs it next;
                    # look the actors up again rather than keep calling the dead one.
                    self._shards = self._connect()
                for (_, future), answer in zip(group, answers):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)

    async def _screen_and_write(self, items: list[EnrolRequest], gallery: str, check: DuplicateCheck) -> list:
        vectors = l2_normalise(np.stack([np.asarray(item.vector, np.float32).reshape(-1) for item in items]))
        per_shard = await asyncio.gather(
            *(call_shard(s.search_subjects.remote(vectors, SCREEN_TOP_K, [gallery])) for s in self._shards)
        )
        candidates = [merge_subjects((hits[q] for hits in per_shard), SCREEN_TOP_K) for q in range(len(items))]
        screened = screen([item.key for item in items], vectors, candidates, check.threshold, reject=check.reject)
        accepted = [i for i, s in enumerate(screened) if s.accepted]
        # One call per enrolment: the shard's log group-commits them, and a refusal of one (a reused
        # request key) fails only that one.
        written = await asyncio.gather(*(self._write(items[i]) for i in accepted), return_exceptions=True)
        outcome: dict[int, object] = dict(zip(accepted, written))
        answers = []
        for i, s in enumerate(screened):
            duplicate = s.duplicate_of
            if duplicate is not None and s.of_batch is not None and isinstance(outcome.get(s.of_batch), dict):
                duplicate = replace(duplicate, template_id=outcome[s.of_batch]["template_id"])
            if not s.accepted:
                answers.append({"template_id": None, "shard": None, "seq": None, "duplicate_of": duplicate})
            elif isinstance(outcome[i], BaseException):
                answers.append(outcome[i])
            else:
                answers.append({**outcome[i], "duplicate_of": duplicate})
        return answers

    async def _write(self, item: EnrolRequest) -> dict:
        shard = shard_for(item.key, self._num_shards)
        [(template_id, seq)] = await call_shard(
            self._shards[shard].enrol.remote([(item.key, item.vector, item.quality, item.request, item.generation)])
        )
        return {"template_id": template_id, "shard": shard, "seq": seq}


def sequencer_handle(
    settings: UfmeSettings, dim: int, *, shard_num_cpus: float, shard_resources: dict | None = None, namespace: str = NAMESPACE
):
    """Get (or create) the cluster's sequencer in `namespace`; idempotent across replicas."""
    return (
        ray.remote(EnrolmentSequencer)
        .options(
            name=SEQUENCER_NAME,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
        )
        .remote(settings.transport_json(), dim, shard_num_cpus, shard_resources, namespace)
    )
