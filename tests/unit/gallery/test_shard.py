from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ufme_ray.config import GallerySettings, IndexSettings, LogSettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.log import CorruptSegmentError, FencedError, InMemoryEventLog
from ufme_ray.gallery.log_segments import delete_segments_through
from ufme_ray.gallery.routing import TEMPLATE_COUNTER_BITS, shard_for
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment, WrongShardError
from ufme_ray.gallery.snapshot import ShardSnapshot
from ufme_ray.gallery.storage import ObjectStore
from tests.unit.gallery.conftest import face_like, unit_vectors

DIM = 16
SMALL = GallerySettings(num_shards=2, log=LogSettings(group_commit_window_s=0.001))
IVF = SMALL.model_copy(
    update={"index": IndexSettings(exact_max_vectors=200, pq_bytes_per_vector=4, nprobe=64, rerank_candidates=50)}
)


def subjects_of(shard: int, count: int, num_shards: int = 2, prefix: str = "person") -> list[str]:
    found, i = [], 0
    while len(found) < count:
        if shard_for(f"{prefix}-{i}", num_shards) == shard:
            found.append(f"{prefix}-{i}")
        i += 1
    return found


def enrol_all(shard: Shard, subjects: list[str], vectors: np.ndarray) -> list[int]:
    return [tid for tid, _ in shard.enrol([Enrolment(s, v) for s, v in zip(subjects, vectors)])]


def test_enrol_search_delete(file_store: ObjectStore) -> None:
    rng = np.random.default_rng(0)
    shard = Shard.open(file_store, 1, 2, DIM, SMALL)
    people = subjects_of(1, 3)
    vectors = unit_vectors(rng, 6, DIM)
    ids = enrol_all(shard, [people[0], people[0], people[1], people[1], people[2], people[2]], vectors)
    assert len(set(ids)) == 6 and all(tid >> TEMPLATE_COUNTER_BITS == 1 for tid in ids)
    [hits] = shard.search(vectors[2:3], k=6)
    assert hits[0].template_id == ids[2] and hits[0].subject_id == people[1]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert shard.delete(people[1]) == sorted(ids[2:4])
    assert shard.delete(people[1]) == []
    assert shard.delete(subjects_of(1, 1, prefix="unknown")[0]) == []
    results = shard.search(vectors, k=6)
    assert all(h.subject_id != people[1] for hits in results for h in hits)
    assert [t.template_id for t in shard.templates(people[0])] == ids[:2]
    assert shard.templates(people[1]) == []
    stats = shard.stats()
    # 6 enrolments and the one delete that erased something: refused deletes log nothing.
    assert (stats.live_templates, stats.index_kind, stats.applied_seq) == (4, "flat", 7)


def test_a_delete_that_erases_nothing_logs_nothing(file_store: ObjectStore) -> None:
    # Found by the bad-input proof: DELETE of an unknown subject answered 404 yet appended a
    # durable delete event, so refused requests grew the log (applied_seq moved on every shard).
    shard = Shard.open(file_store, 0, 2, DIM, SMALL)
    [person] = subjects_of(0, 1)
    enrol_all(shard, [person], unit_vectors(np.random.default_rng(1), 1, DIM))
    assert shard.delete(person) != []
    applied, segments = shard.stats().applied_seq, file_store.list("events/")
    assert shard.delete(person) == []
    assert shard.delete(subjects_of(0, 1, prefix="never-enrolled")[0]) == []
    assert shard.stats().applied_seq == applied
    assert file_store.list("events/") == segments


def test_validation(file_store: ObjectStore) -> None:
    shard = Shard.open(file_store, 0, 2, DIM, SMALL)
    other = subjects_of(1, 1)[0]
    mine = subjects_of(0, 1)[0]
    with pytest.raises(WrongShardError):
        shard.enrol([Enrolment(other, np.ones(DIM))])
    with pytest.raises(WrongShardError):
        shard.delete(other)
    with pytest.raises(ValueError, match="dim"):
        shard.enrol([Enrolment(mine, np.ones(DIM + 1))])
    with pytest.raises(ValueError):
        shard.enrol([Enrolment(mine, np.zeros(DIM))])
    with pytest.raises(ValueError):
        shard.search(np.ones((1, DIM + 1)), 3)
    assert shard.stats().applied_seq == 0  # nothing refused reached the log


def test_works_on_the_in_memory_log() -> None:
    rng = np.random.default_rng(1)
    shard = Shard(
        shard_id=0, num_shards=1, dim=DIM, settings=SMALL, log=InMemoryEventLog(),
        base=ShardSnapshot.empty(0, DIM, SMALL.index),
    )
    vectors = unit_vectors(rng, 3, DIM)
    ids = enrol_all(shard, ["a", "b", "c"], vectors)
    shard.delete("b")
    assert [h.template_id for h in shard.search(vectors, 1)[0]] == [ids[0]]
    assert all(h.subject_id != "b" for hits in shard.search(vectors, 3) for h in hits)


def test_template_ids_are_unique_across_shards_and_restarts(file_store: ObjectStore) -> None:
    rng = np.random.default_rng(2)
    seen = []
    for shard_id in (0, 1):
        shard = Shard.open(file_store, shard_id, 2, DIM, SMALL)
        seen += enrol_all(shard, subjects_of(shard_id, 3), unit_vectors(rng, 3, DIM))
        shard.delete(subjects_of(shard_id, 3)[2])  # the highest id is gone: it must not come back
        reopened = Shard.open(file_store, shard_id, 2, DIM, SMALL)
        seen += enrol_all(reopened, subjects_of(shard_id, 1), unit_vectors(rng, 1, DIM))
    assert len(seen) == len(set(seen)) == 8


def test_restart_restores_state_and_fences_the_old_instance(store: ObjectStore) -> None:
    rng = np.random.default_rng(3)
    first = Shard.open(store, 0, 2, DIM, SMALL)
    people = subjects_of(0, 4)
    vectors = unit_vectors(rng, 4, DIM)
    enrol_all(first, people, vectors)
    first.delete(people[1])
    second = Shard.open(store, 0, 2, DIM, SMALL)
    assert second.search(vectors, 2) == first.search(vectors, 2)
    with pytest.raises(FencedError, match="superseded"):
        first.enrol([Enrolment(people[0], vectors[0])])
    assert second.stats().live_templates == 3


def test_concurrent_enrols_and_searches(file_store: ObjectStore) -> None:
    rng = np.random.default_rng(4)
    shard = Shard.open(file_store, 0, 1, DIM, SMALL.model_copy(update={"num_shards": 1}))
    vectors = unit_vectors(rng, 80, DIM)
    acked: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        for i in range(w, 80, 8):
            [(tid, _)] = shard.enrol([Enrolment(f"s{i}", vectors[i])])
            with lock:
                acked[i] = tid

    def reader() -> None:
        while not stop.is_set():
            try:
                for hits in shard.search(vectors[:4], 3):
                    assert all(h.score <= 1.0001 for h in hits)
            except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test thread
                errors.append(exc)
                return

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors
    top = shard.search(vectors, 1)
    assert [hits[0].template_id for hits in top] == [acked[i] for i in range(80)]


def test_compaction_swap_and_erasure(store: ObjectStore, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shard = Shard.open(store, 0, 1, DIM, IVF.model_copy(update={"num_shards": 1}))
    vectors, labels = face_like(rng, 100, 4, DIM)
    names = [f"id{label:03d}" for label in labels]
    ids = enrol_all(shard, names, vectors)
    shard.delete("id007")
    manifest = compact(store, num_shards=1, dim=DIM, settings=IVF, work_dir=tmp_path)
    # Events after the snapshot's watermark: they stay in the delta across the swap.
    late = enrol_all(shard, ["late"], unit_vectors(rng, 1, DIM))
    shard.delete("id008")
    shard.swap_to(manifest.epoch)
    stats = shard.stats()
    assert (stats.snapshot_epoch, stats.index_kind, stats.snapshot_rows) == (manifest.epoch, "ivfpq", 396)
    assert (stats.delta_rows, stats.tombstoned_subjects, stats.live_templates) == (1, 1, 393)
    hits = shard.search(vectors, 5)
    returned = {h.subject_id for per_query in hits for h in per_query}
    assert not returned & {"id007", "id008"}
    own = [per_query[0].template_id for per_query in hits]
    live = [i for i, n in enumerate(names) if n not in ("id007", "id008")]
    assert np.mean([own[i] == ids[i] for i in live]) >= 0.95
    assert shard.search(shard_vectors := unit_vectors(rng, 1, DIM), 400)[0]  # k above the live count is fine
    assert len(shard.search(shard_vectors, 400)[0]) == 393
    assert [t.template_id for t in shard.templates("late")] == late
    # A restarted shard agrees with the live one.
    restarted = Shard.open(store, 0, 1, DIM, IVF.model_copy(update={"num_shards": 1}))
    assert restarted.search(vectors[:20], 5) == shard.search(vectors[:20], 5)
    # Erasure: after the next compaction the deleted faces are in no stored object.
    manifest = compact(store, num_shards=1, dim=DIM, settings=IVF, work_dir=tmp_path)
    shard.swap_to(manifest.epoch)
    delete_segments_through(store, 0, manifest.shards[0].watermark)
    store.delete([k for k in store.list("snapshots") if not k.startswith(f"snapshots/{manifest.epoch:010d}/")])
    blob = b"".join(store.read(k) for k in store.list(""))
    for i in (i for i, n in enumerate(names) if n == "id007"):
        assert vectors[i].tobytes() not in blob
        assert vectors[i].astype(np.float16).tobytes() not in blob
    assert b"id007" not in blob and b"id008" not in blob
    assert Shard.open(store, 0, 1, DIM, IVF.model_copy(update={"num_shards": 1})).stats().live_templates == 393


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "ivfpq-mmap"])
def test_subject_scores_for_verification(file_store: ObjectStore, tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(6)
    one = (SMALL if kind == "flat" else IVF).model_copy(update={"num_shards": 1})
    if kind == "ivfpq-mmap":
        mmap = one.index.model_copy(update={"rerank_store": "mmap", "rerank_dir": tmp_path / "rerank"})
        one = one.model_copy(update={"index": mmap})
    shard = Shard.open(file_store, 0, 1, DIM, one)
    vectors, labels = face_like(rng, 75, 4, DIM)
    ids = enrol_all(shard, [f"id{label:03d}" for label in labels], vectors)
    shard.swap_to(compact(file_store, num_shards=1, dim=DIM, settings=one, work_dir=tmp_path).epoch)
    late = enrol_all(shard, ["id000"], unit_vectors(rng, 1, DIM))  # one more template, in the delta
    [scores] = shard.subject_scores("id000", vectors[:1])
    assert [tid for tid, _ in scores] == ids[:4] + late
    expected = vectors[:4] @ vectors[0]
    np.testing.assert_allclose([score for _, score in scores[:4]], expected, atol=2e-3)
    shard.delete("id000")
    assert shard.subject_scores("id000", vectors[:2]) == [[], []]
    if kind == "ivfpq-mmap":
        assert [p.suffix for p in (tmp_path / "rerank").iterdir()] == [".faiss"]


def test_restore_refuses_a_torn_tail_segment_and_names_it(store: ObjectStore) -> None:
    shard = Shard.open(store, 0, 1, DIM, SMALL.model_copy(update={"num_shards": 1}))
    enrol_all(shard, ["a", "b"], unit_vectors(np.random.default_rng(7), 2, DIM))
    [segment] = [k for k in store.list("events/shard-0") if k.endswith(".seg")]
    data = store.read(segment)
    torn = segment.replace("00000000000000000001-00000000000000000002", "00000000000000000003-00000000000000000004")
    store.write(torn, data[: len(data) // 2])  # as if a writer died mid-PUT on a store without atomic PUTs
    with pytest.raises(CorruptSegmentError) as info:
        Shard.open(store, 0, 1, DIM, SMALL.model_copy(update={"num_shards": 1}))
    assert info.value.segment == torn
