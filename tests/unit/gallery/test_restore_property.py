"""Restore == live: random enrol/delete/compact/swap/restore sequences against a plain Python model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ufme_ray.config import GallerySettings, LogSettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import open_storage

DIM = 8
SUBJECTS = ["ann", "bob", "cyd"]
SETTINGS = GallerySettings(num_shards=1, log=LogSettings(group_commit_window_s=0.0))

operations = st.lists(
    st.one_of(
        st.tuples(st.just("enrol"), st.sampled_from(SUBJECTS), st.integers(1, 3)),
        st.tuples(st.just("delete"), st.sampled_from(SUBJECTS)),
        st.tuples(st.just("compact")),
        st.tuples(st.just("swap")),
        st.tuples(st.just("restore")),
    ),
    min_size=1,
    max_size=25,
)


def check(shard: Shard, model: dict[str, dict[int, np.ndarray]]) -> None:
    expected = {tid: vector for templates in model.values() for tid, vector in templates.items()}
    assert shard.stats().live_templates == len(expected)
    for subject in SUBJECTS:
        assert [t.template_id for t in shard.templates(subject)] == sorted(model.get(subject, {}))
    if not expected:
        assert shard.search(np.ones((1, DIM), np.float32), 3) == [[]]
        return
    ids = list(expected)
    results = shard.search(np.stack([expected[t] for t in ids]), len(ids) + 2)
    owner = {tid: subject for subject, templates in model.items() for tid in templates}
    for tid, hits in zip(ids, results):
        assert {h.template_id for h in hits} == set(ids)  # every live template, no deleted one
        assert all(owner[h.template_id] == h.subject_id for h in hits)
        assert hits[0].template_id == tid


def assert_same_hits(got: list, expected: list) -> None:
    # The restored shard may hold in its snapshot what the live one holds in its delta:
    # same templates in the same order, scores equal up to float rounding.
    assert [[(h.template_id, h.subject_id) for h in hits] for hits in got] == [
        [(h.template_id, h.subject_id) for h in hits] for hits in expected
    ]
    for got_hits, expected_hits in zip(got, expected):
        np.testing.assert_allclose([h.score for h in got_hits], [h.score for h in expected_hits], atol=1e-5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, seed=st.integers(0, 2**32 - 1))
# A delete between a compaction and the swap to it must tombstone the new snapshot.
@example(ops=[("enrol", "ann", 2), ("compact",), ("delete", "ann"), ("enrol", "ann", 1), ("swap",)], seed=0)
def test_restore_equals_live(ops: list[tuple], seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        store = open_storage((Path(folder) / "store").as_uri())
        shard = Shard.open(store, 0, 1, DIM, SETTINGS)
        model: dict[str, dict[int, np.ndarray]] = {}
        published = 0
        for op in ops:
            if op[0] == "enrol":
                vectors = rng.standard_normal((op[2], DIM)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                acked = shard.enrol([Enrolment(op[1], v) for v in vectors])
                model.setdefault(op[1], {}).update((tid, v) for (tid, _), v in zip(acked, vectors))
            elif op[0] == "delete":
                erased = shard.delete(op[1])
                assert erased == sorted(model.pop(op[1], {}))
            elif op[0] == "compact":
                # Events may arrive between a compaction and the swap to its snapshot.
                published = compact(store, num_shards=1, dim=DIM, settings=SETTINGS, work_dir=folder).epoch
            elif op[0] == "swap":
                if published > shard.stats().snapshot_epoch:
                    shard.swap_to(published)
            else:
                restored = Shard.open(store, 0, 1, DIM, SETTINGS)
                queries = rng.standard_normal((3, DIM)).astype(np.float32)
                assert_same_hits(restored.search(queries, 50), shard.search(queries, 50))
                for subject in SUBJECTS:
                    assert restored.templates(subject) == shard.templates(subject)
                shard = restored
            check(shard, model)
