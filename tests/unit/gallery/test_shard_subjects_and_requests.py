"""Subject-level top-k that no subject can crowd, and request keys that make a retried enrolment
add nothing (issue 19, items 8 and 1)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ufme_ray.gallery.build import compact
from ufme_ray.gallery.requests import RequestKeyReusedError
from ufme_ray.gallery.shard import Shard, _best_per_subject
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import ObjectStore
from tests.unit.gallery.conftest import unit_vectors
from tests.unit.gallery.test_shard import DIM, IVF, SMALL

ONE = SMALL.model_copy(update={"num_shards": 1})
ONE_IVF = IVF.model_copy(update={"num_shards": 1})


def near(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float) -> np.ndarray:
    samples = centre + spread * unit_vectors(rng, n, DIM)
    return samples / np.linalg.norm(samples, axis=1, keepdims=True)


def crowded_gallery(shard: Shard, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """One subject with 50 templates right around the probe, five others a little farther, noise."""
    probe = unit_vectors(rng, 1, DIM)[0]
    items = [Enrolment("crowd", v) for v in near(rng, probe, 50, 0.05)]
    others = [f"other-{i}" for i in range(5)]
    items += [Enrolment(name, v) for name, v in zip(others, near(rng, probe, 5, 0.6))]
    items += [Enrolment(f"far-{i}", v) for i, v in enumerate(unit_vectors(rng, 300, DIM))]
    shard.enrol(items)
    return probe, ["crowd", *others]


@pytest.mark.parametrize("compacted", [False, True], ids=["delta", "ivfpq-snapshot"])
def test_subject_top_k_is_exact_whatever_the_templates_per_subject(file_store: ObjectStore, tmp_path: Path, compacted: bool) -> None:
    rng = np.random.default_rng(10)
    settings = ONE_IVF if compacted else ONE
    shard = Shard.open(file_store, 0, 1, DIM, settings)
    probe, expected = crowded_gallery(shard, rng)
    if compacted:
        shard.swap_to(compact(file_store, num_shards=1, dim=DIM, settings=settings, work_dir=tmp_path).epoch)
        assert shard.stats().index_kind == "ivfpq"
    # The fixed-width template search the Searcher used to ask for finds only the crowding subject.
    assert [h.subject_id for h in _best_per_subject(shard.search(probe[None], 6 * 4)[0])] == ["crowd"]
    [hits] = shard.search_subjects(probe[None], 6)
    assert hits[0].subject_id == "crowd" and {h.subject_id for h in hits[1:]} == set(expected[1:])
    assert len({h.subject_id for h in hits}) == len(hits)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    # Each hit is its subject's best template.
    [all_hits] = shard.search(probe[None], 400)
    best = {}
    for hit in all_hits:
        best.setdefault(hit.subject_id, hit)
    assert all(best[h.subject_id] == h for h in hits)


def test_subject_search_stops_when_the_shard_runs_out(file_store: ObjectStore) -> None:
    rng = np.random.default_rng(11)
    shard = Shard.open(file_store, 0, 1, DIM, ONE)
    shard.enrol([Enrolment("only", v) for v in unit_vectors(rng, 30, DIM)])
    [hits] = shard.search_subjects(unit_vectors(rng, 1, DIM), 3)
    assert [h.subject_id for h in hits] == ["only"]
    assert shard.search_subjects(np.zeros((0, DIM), np.float32), 3) == []


def request(name: int, what: int) -> bytes:
    return name.to_bytes(16, "big") + what.to_bytes(16, "big")


def test_a_retried_request_adds_nothing_and_answers_the_first_template(store: ObjectStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    shard = Shard.open(store, 0, 1, DIM, ONE)
    vector = unit_vectors(rng, 1, DIM)[0]
    [first] = shard.enrol([Enrolment("ana", vector, request=request(1, 7))])
    assert shard.enrol([Enrolment("ana", vector, request=request(1, 7))]) == [first]
    assert len(shard.templates("ana")) == 1
    # Without a key, or under another key, the same enrolment is a second template.
    [second] = shard.enrol([Enrolment("ana", vector, request=request(2, 7))])
    assert second[0] != first[0] and len(shard.templates("ana")) == 2
    # The key survives a restore from the log…
    restored = Shard.open(store, 0, 1, DIM, ONE)
    assert restored.enrol([Enrolment("ana", vector, request=request(1, 7))]) == [first]
    # …and the key reused for another request (other subject or image) is refused, adding nothing.
    with pytest.raises(RequestKeyReusedError):
        restored.enrol([Enrolment("bob", vector, request=request(1, 8))])
    assert restored.templates("bob") == [] and restored.stats().live_templates == 2


def test_request_keys_survive_compaction_and_go_with_erasure(store: ObjectStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    shard = Shard.open(store, 0, 1, DIM, ONE)
    vectors = unit_vectors(rng, 2, DIM)
    [ana] = shard.enrol([Enrolment("ana", vectors[0], request=request(1, 1))])
    shard.enrol([Enrolment("bob", vectors[1], request=request(2, 2))])
    shard.swap_to(compact(store, num_shards=1, dim=DIM, settings=ONE, work_dir=tmp_path).epoch)
    restored = Shard.open(store, 0, 1, DIM, ONE)
    assert restored.stats().delta_rows == 0  # both live in the snapshot now
    assert restored.enrol([Enrolment("ana", vectors[0], request=request(1, 1))])[0][0] == ana[0]
    assert restored.stats().live_templates == 2
    # Erased: the key names nothing any more, and a retry enrols anew.
    restored.delete("bob")
    [again] = restored.enrol([Enrolment("bob", vectors[1], request=request(2, 2))])
    assert [t.template_id for t in restored.templates("bob")] == [again[0]]


def test_concurrent_retries_under_one_key_write_once(file_store: ObjectStore) -> None:
    rng = np.random.default_rng(14)
    shard = Shard.open(file_store, 0, 1, DIM, ONE)
    vector = unit_vectors(rng, 1, DIM)[0]
    answers: list = []
    barrier = threading.Barrier(8)

    def enrol() -> None:
        barrier.wait()
        answers.append(shard.enrol([Enrolment("ana", vector, request=request(5, 5))])[0])

    threads = [threading.Thread(target=enrol) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 8 and len(set(answers)) == 1
    assert len(shard.templates("ana")) == 1
    # Repeats within one batch are written once too.
    answers = shard.enrol([Enrolment("cy", vector, request=request(6, 6)), Enrolment("cy", vector, request=request(6, 6))])
    assert answers[0] == answers[1] and len(shard.templates("cy")) == 1
