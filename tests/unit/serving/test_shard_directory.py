"""The Gateway's search straight to the shard actors (`shard_calls.ShardDirectory`), without a
cluster: the actors it looks up by name are stand-ins that answer as `ShardActor.search_subjects`."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ray.exceptions import ActorDiedError

from ufme_ray.gallery.galleries import subject_key
from ufme_ray.gallery.merge import Candidate
from ufme_ray.gallery.shard_types import SearchHit
from ufme_ray.orchestration.errors import GalleryUnavailableError
from ufme_ray.serving import shard_calls
from ufme_ray.serving.shard_actor import NAMESPACE


class _Method:
    def __init__(self, answer):
        self._answer = answer

    def remote(self, *args):
        future = asyncio.get_running_loop().create_future()
        answer = self._answer(*args)
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
        return future


class FakeShard:
    def __init__(self, hits: list[SearchHit]):
        self.fail = False
        self.search_subjects = _Method(
            lambda queries, top_k, galleries: ActorDiedError() if self.fail else [hits[:top_k] for _ in queries]
        )


@pytest.fixture
def actors(monkeypatch) -> dict:
    """The named actors `ray.get_actor` finds, and each lookup made."""
    named: dict = {"lookups": []}

    def get_actor(name: str, namespace: str):
        named["lookups"].append((name, namespace))
        if name not in named:
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return named[name]

    monkeypatch.setattr(shard_calls.ray, "get_actor", get_actor)
    return named


def search(directory, queries=1, top_k=2):
    return asyncio.run(directory.search(np.zeros((queries, 4), np.float32), top_k, ["default", "staff"]))


def test_merges_every_shards_subjects_into_the_exact_top_k_with_their_galleries(actors):
    actors["ufme-shard-0"] = FakeShard([SearchHit(1, subject_key("default", "ann"), 0.9), SearchHit(2, subject_key("default", "ann"), 0.8)])
    actors["ufme-shard-1"] = FakeShard([SearchHit(7, subject_key("staff", "bob"), 0.85), SearchHit(8, subject_key("staff", "cy"), 0.1)])
    directory = shard_calls.ShardDirectory(2)
    assert search(directory, queries=2) == [[Candidate("ann", 0.9, 1, "default"), Candidate("bob", 0.85, 7, "staff")]] * 2
    search(directory)
    assert actors["lookups"] == [("ufme-shard-0", NAMESPACE), ("ufme-shard-1", NAMESPACE)]  # once, not per search


def test_a_shard_not_created_yet_is_503_until_it_is(actors):
    actors["ufme-shard-0"] = FakeShard([SearchHit(1, "ann", 0.9)])
    directory = shard_calls.ShardDirectory(2)
    with pytest.raises(GalleryUnavailableError, match="not ready"):
        search(directory)
    actors["ufme-shard-1"] = FakeShard([])
    assert search(directory) == [[Candidate("ann", 0.9, 1)]]


def test_a_failed_call_is_503_and_the_next_search_looks_the_shards_up_again(actors):
    dead = FakeShard([SearchHit(1, "ann", 0.9)])
    dead.fail = True
    actors["ufme-shard-0"] = dead
    directory = shard_calls.ShardDirectory(1)
    with pytest.raises(GalleryUnavailableError, match="not ready"):
        search(directory)
    actors["ufme-shard-0"] = FakeShard([SearchHit(3, "ann", 0.7)])  # created anew under the same name
    assert search(directory) == [[Candidate("ann", 0.7, 3)]]
    assert len(actors["lookups"]) == 2

