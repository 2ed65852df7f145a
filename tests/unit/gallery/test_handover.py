"""Two processes on one shard's log, as during a KubeRay upgrade: a follower tails the writer, takes
the claim when traffic reaches it, and the old writer hands over; nothing acknowledged is missed."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ufme_ray.gallery.follower import CLAIM_SETTLE_S, NotWriterError
from ufme_ray.gallery.log import FencedError
from ufme_ray.gallery.log_segments import list_log, log_prefix
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import ObjectStore
from tests.unit.gallery.conftest import unit_vectors
from tests.unit.gallery.test_shard import DIM, SMALL, enrol_all, subjects_of


def subjects_found(shard: Shard, vectors: np.ndarray) -> list[str | None]:
    """The best subject for each vector (None when the shard has nothing close)."""
    return [hits[0].subject_id if hits and hits[0].score > 0.99 else None for hits in shard.search(vectors, 1)]


def test_a_follower_claims_nothing_and_applies_the_writers_appends(store: ObjectStore) -> None:
    rng = np.random.default_rng(1)
    people, vectors = subjects_of(0, 6), unit_vectors(rng, 6, DIM)
    old = Shard.open(store, 0, 2, DIM, SMALL)
    enrol_all(old, people[:3], vectors[:3])
    claims_before = list_log(store, log_prefix(0)).claims
    new = Shard.open(store, 0, 2, DIM, SMALL, writer=False)
    assert not new.is_writer
    assert list_log(store, log_prefix(0)).claims == claims_before  # restoring fenced nobody
    assert subjects_found(new, vectors[:3]) == people[:3]
    enrol_all(old, people[3:5], vectors[3:5])  # the old writer goes on undisturbed
    old.delete(people[0])
    assert subjects_found(new, vectors[3:5]) == [None, None]
    assert new.follow() == 3
    assert subjects_found(new, vectors) == [None, *people[1:5], None]
    assert new.follow() == 0
    with pytest.raises(NotWriterError):
        new.enrol([Enrolment(people[5], vectors[5])])


def test_taking_the_claim_sees_every_acknowledged_write_and_fences_the_old_writer(store: ObjectStore) -> None:
    rng = np.random.default_rng(2)
    people, vectors = subjects_of(1, 6), unit_vectors(rng, 6, DIM)
    old = Shard.open(store, 1, 2, DIM, SMALL)
    enrol_all(old, people[:2], vectors[:2])
    new = Shard.open(store, 1, 2, DIM, SMALL, writer=False)
    enrol_all(old, people[2:4], vectors[2:4])  # acknowledged after the follower's last look
    assert new.take_writer() == 2  # caught up by the claim itself, no follow() needed
    assert new.is_writer
    assert subjects_found(new, vectors[:4]) == people[:4]
    with pytest.raises(FencedError):
        old.enrol([Enrolment(people[4], vectors[4])])
    assert old.superseded()
    # Template ids continue after the old writer's: none is handed out twice.
    [(template_id, _)] = new.enrol([Enrolment(people[5], vectors[5])])
    assert template_id not in {t.template_id for p in people[:4] for t in new.templates(p)}
    assert subjects_found(new, vectors[4:5]) == [None]  # the fenced write was never acknowledged
    restored = Shard.open(store, 1, 2, DIM, SMALL, writer=False)
    assert subjects_found(restored, vectors) == [*people[:4], None, people[5]]


def test_a_fenced_writer_hands_over_and_follows_the_new_one(store: ObjectStore) -> None:
    rng = np.random.default_rng(3)
    people, vectors = subjects_of(0, 4), unit_vectors(rng, 4, DIM)
    old = Shard.open(store, 0, 2, DIM, SMALL)
    new = Shard.open(store, 0, 2, DIM, SMALL, writer=False)
    new.take_writer()
    enrol_all(new, people[:2], vectors[:2])
    with pytest.raises(FencedError):
        old.enrol([Enrolment(people[3], vectors[3])])
    old.hand_over()
    assert not old.is_writer
    assert old.follow() == 2
    assert subjects_found(old, vectors[:2]) == people[:2]
    new.delete(people[0])
    assert old.follow() == 1
    assert subjects_found(old, vectors[:2]) == [None, people[1]]
    with pytest.raises(NotWriterError):
        old.enrol([Enrolment(people[2], vectors[2])])
    assert subjects_found(new, vectors[3:]) == [None]  # the fenced enrolment was never acknowledged


def test_a_follower_waits_while_the_newest_claim_has_not_started(store: ObjectStore) -> None:
    rng = np.random.default_rng(4)
    people, vectors = subjects_of(0, 3), unit_vectors(rng, 3, DIM)
    writer = Shard.open(store, 0, 2, DIM, SMALL)
    follower = Shard.open(store, 0, 2, DIM, SMALL, writer=False)
    epoch = max(list_log(store, log_prefix(0)).claims) + 1
    claim = f"{log_prefix(0)}/writers/{epoch:010d}.claim"
    # A newer writer has claimed but not yet listed the log and recorded its start: the old
    # writer's next segment may land before or after that start, fenced or not.
    store.write(claim, json.dumps({"epoch": epoch, "nonce": "n", "pid": 0, "time": time.time()}).encode())
    with pytest.raises(FencedError):
        enrol_all(writer, people[:1], vectors[:1])
    assert follower.follow() == 0
    assert subjects_found(follower, vectors[:1]) == [None]
    # A claim that never started within CLAIM_SETTLE_S died with its writer and fences nothing: the
    # segment that landed is part of the log, as a restore would read it.
    store.delete([claim])
    stale = time.time() - CLAIM_SETTLE_S - 1
    store.write(claim, json.dumps({"epoch": epoch, "nonce": "n", "pid": 0, "time": stale}).encode())
    assert follower.follow() == 1
    assert subjects_found(follower, vectors[:1]) == people[:1]
    assert subjects_found(Shard.open(store, 0, 2, DIM, SMALL, writer=False), vectors[:1]) == people[:1]
