"""Galleries inside a shard: isolation, the registry, erasure of a deleted gallery, and a store
written before galleries restoring as the gallery `default`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.gallery.conftest import unit_vectors
from tests.unit.gallery.test_shard import DIM, IVF, SMALL
from ufme_ray.config import GallerySettings, IndexSettings, LogSettings
from ufme_ray.gallery import shard as shard_module
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.galleries import (
    DEFAULT_GALLERY,
    DefaultGalleryError,
    GalleryExistsError,
    TooManyGalleriesError,
    NoSuchGalleryError,
    split_key,
    subject_key,
)
from ufme_ray.gallery.routing import shard_for
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import ObjectStore, open_storage

ONE = SMALL.model_copy(update={"num_shards": 1})
ONE_IVF = IVF.model_copy(update={"num_shards": 1})
FIXTURE = Path(__file__).parents[2] / "fixtures" / "store_v1"


def create(shard: Shard, gallery_id: str, **details) -> int:
    record = shard.change_gallery(GalleryEvent(gallery_id, "create", 1.0, details), max_galleries=100)
    return record.generation


def drop(shard: Shard, gallery_id: str) -> list[int]:
    """The delete flow of one shard's engine: mark, erase, purge."""
    record = shard.change_gallery(GalleryEvent(gallery_id, "delete", 2.0), max_galleries=100)
    erased = shard.erase_gallery(gallery_id, record.generation)
    assert shard.change_gallery(GalleryEvent(gallery_id, "purge", 3.0), max_galleries=100) is None
    return erased


def enrol(shard: Shard, gallery_id: str, subject_id: str, vectors: np.ndarray, generation: int = 0) -> list[int]:
    key = subject_key(gallery_id, subject_id)
    return [t for t, _ in shard.enrol([Enrolment(key, v, generation=generation) for v in vectors])]


@pytest.mark.parametrize("compacted", [False, True], ids=["delta", "ivfpq-snapshot"])
@pytest.mark.parametrize("exact_rows", [shard_module.EXACT_GALLERY_ROWS, 0], ids=["exact-small", "shared-index"])
def test_a_search_stays_in_its_galleries(file_store, tmp_path, monkeypatch, compacted, exact_rows):
    monkeypatch.setattr(shard_module, "EXACT_GALLERY_ROWS", exact_rows)
    rng = np.random.default_rng(3)
    settings = ONE_IVF if compacted else ONE
    shard = Shard.open(file_store, 0, 1, DIM, settings)
    staff, visitors = create(shard, "staff"), create(shard, "visitors")
    face = unit_vectors(rng, 1, DIM)
    # The same face and subject id in three galleries: three subjects.
    for gallery, generation in ((DEFAULT_GALLERY, 0), ("staff", staff), ("visitors", visitors)):
        enrol(shard, gallery, "ann", face, generation)
    for i in range(150):
        enrol(shard, "staff", f"s{i}", unit_vectors(rng, 1, DIM), staff)
        enrol(shard, DEFAULT_GALLERY, f"d{i}", unit_vectors(rng, 2, DIM))
    if compacted:
        shard.swap_to(compact(file_store, num_shards=1, dim=DIM, settings=settings, work_dir=tmp_path).epoch)
        assert shard.stats().index_kind == "ivfpq"
    for galleries, expected in ((["staff"], "staff"), (["visitors"], "visitors"), ([DEFAULT_GALLERY], DEFAULT_GALLERY)):
        [hits] = shard.search(face, 400, galleries)
        assert {split_key(h.subject_id)[0] for h in hits} == {expected}
        assert hits[0].subject_id == subject_key(expected, "ann") and hits[0].score == pytest.approx(1.0, abs=1e-3)
    [both] = shard.search_subjects(face, 3, ["staff", "visitors"])
    assert {h.subject_id for h in both[:2]} == {"staff/ann", "visitors/ann"}
    assert shard.gallery_counts("staff") == {"subjects": 151, "templates": 151}
    assert shard.gallery_counts(DEFAULT_GALLERY) == {"subjects": 151, "templates": 301}
    assert shard.list_subjects("visitors", 10) == ["ann"]
    assert shard.list_subjects("staff", 3) == ["ann", "s0", "s1"]


def test_the_registry_refuses_what_it_must(file_store):
    shard = Shard.open(file_store, 0, 1, DIM, ONE)
    create(shard, "staff", description="front desk")
    with pytest.raises(GalleryExistsError):
        create(shard, "staff")
    with pytest.raises(NoSuchGalleryError):
        shard.change_gallery(GalleryEvent("nobody", "update", 1.0, {"description": "x"}), max_galleries=100)
    with pytest.raises(DefaultGalleryError):
        shard.change_gallery(GalleryEvent(DEFAULT_GALLERY, "delete", 1.0), max_galleries=100)
    with pytest.raises(TooManyGalleriesError):  # default + staff = 2
        shard.change_gallery(GalleryEvent("third", "create", 1.0), max_galleries=2)
    policy = {"thresholds": {"similarity_min": 0.6}}
    updated = shard.change_gallery(GalleryEvent("staff", "update", 5.0, {"policy": policy}), max_galleries=100)
    assert updated.policy == policy and updated.description == "front desk"
    assert [r.gallery_id for r in shard.galleries()] == [DEFAULT_GALLERY, "staff"]


def test_only_shard_0_holds_the_registry(tmp_path):
    store = open_storage((tmp_path / "two").as_uri())
    second = Shard.open(store, 1, 2, DIM, SMALL)
    with pytest.raises(ValueError, match="shard 0"):
        second.change_gallery(GalleryEvent("staff", "create", 1.0), max_galleries=100)


@pytest.mark.parametrize("then", ["reopen", "compact"])
def test_a_deleted_gallery_is_erased_and_stays_closed(file_store, tmp_path, then):
    rng = np.random.default_rng(5)
    shard = Shard.open(file_store, 0, 1, DIM, ONE)
    old = create(shard, "watch")
    in_snapshot = enrol(shard, "watch", "eve", unit_vectors(rng, 2, DIM), old)
    if then == "compact":
        shard.swap_to(compact(file_store, num_shards=1, dim=DIM, settings=ONE, work_dir=tmp_path).epoch)
    in_delta = enrol(shard, "watch", "mal", unit_vectors(rng, 1, DIM), old)
    kept = enrol(shard, DEFAULT_GALLERY, "eve", unit_vectors(rng, 1, DIM))
    assert sorted(drop(shard, "watch")) == sorted(in_snapshot + in_delta)
    # An enrolment that was sent for the deleted incarnation is refused, not resurrected.
    with pytest.raises(NoSuchGalleryError):
        enrol(shard, "watch", "late", unit_vectors(rng, 1, DIM), old)
    new = create(shard, "watch")
    assert new > old
    fresh = enrol(shard, "watch", "eve", unit_vectors(rng, 1, DIM), new)
    if then == "reopen":
        shard.close()
        shard = Shard.open(file_store, 0, 1, DIM, ONE)
    else:
        shard.swap_to(compact(file_store, num_shards=1, dim=DIM, settings=ONE, work_dir=tmp_path).epoch)
        shard.close()
        shard = Shard.open(file_store, 0, 1, DIM, ONE)  # from the snapshot alone
    assert [t.template_id for t in shard.templates("watch/eve")] == fresh
    assert shard.templates("watch/mal") == []
    assert [t.template_id for t in shard.templates("eve")] == kept
    with pytest.raises(NoSuchGalleryError):
        enrol(shard, "watch", "late", unit_vectors(rng, 1, DIM), old)
    assert {r.gallery_id: r.generation for r in shard.galleries()} == {DEFAULT_GALLERY: 0, "watch": new}


def test_a_store_written_before_galleries_restores_as_default(tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(FIXTURE / "store", store_dir)  # opening a shard claims its log: never in place
    expected = json.loads((FIXTURE / "expected.json").read_text())
    store = open_storage(store_dir.as_uri())
    settings = GallerySettings(num_shards=expected["num_shards"])
    shards = [Shard.open(store, i, expected["num_shards"], expected["dim"], settings) for i in range(expected["num_shards"])]
    assert {r.gallery_id for r in shards[0].galleries()} == {DEFAULT_GALLERY}
    listed = sorted(s for shard in shards for s in shard.list_subjects(DEFAULT_GALLERY, 100))
    assert listed == sorted(expected["subjects"])
    for subject, templates in expected["subjects"].items():
        shard = shards[shard_for(subject, expected["num_shards"])]
        assert [t.template_id for t in shard.templates(subject)] == [t["template_id"] for t in templates]
        for template in templates:
            [hits] = shard.search_subjects(np.array([template["vector"]], np.float32), 1)
            assert hits[0].subject_id == subject and hits[0].template_id == template["template_id"]
    assert shards[0].templates("subject-03") == [] and shards[shard_for("subject-11", 2)].templates("subject-11") == []


# --- property: isolation under random enrol/delete/create/drop/compact/swap/restore ---------------

GALLERIES = [DEFAULT_GALLERY, "a", "b"]
SUBJECTS = ["ann", "bob"]
PROPERTY_SETTINGS = GallerySettings(
    num_shards=1,
    log=LogSettings(group_commit_window_s=0.0),
    index=IndexSettings(exact_max_vectors=4),  # IVF-PQ only from 256 vectors: flat here, exact either way
)
PDIM = 8

operations = st.lists(
    st.one_of(
        st.tuples(st.just("enrol"), st.sampled_from(GALLERIES), st.sampled_from(SUBJECTS), st.integers(1, 2)),
        st.tuples(st.just("delete"), st.sampled_from(GALLERIES), st.sampled_from(SUBJECTS)),
        st.tuples(st.just("create"), st.sampled_from(GALLERIES[1:])),
        st.tuples(st.just("drop"), st.sampled_from(GALLERIES[1:])),
        st.tuples(st.just("stale"), st.sampled_from(GALLERIES[1:])),
        st.tuples(st.just("compact")),
        st.tuples(st.just("swap")),
        st.tuples(st.just("restore")),
    ),
    min_size=1,
    max_size=30,
)


def check_isolation(shard: Shard, model: dict[str, dict[str, dict[int, np.ndarray]]], generations: dict[str, int]) -> None:
    assert {r.gallery_id: r.generation for r in shard.galleries()} == {DEFAULT_GALLERY: 0, **generations}
    for gallery in GALLERIES:
        subjects = model.get(gallery, {})
        for subject in SUBJECTS:
            expected = sorted(subjects.get(subject, {}))
            assert [t.template_id for t in shard.templates(subject_key(gallery, subject))] == expected
        live = {tid: v for templates in subjects.values() for tid, v in templates.items()}
        assert shard.gallery_counts(gallery)["templates"] == len(live)
        probes = np.stack(list(live.values())) if live else np.ones((1, PDIM), np.float32)
        for hits in shard.search(probes, 20, [gallery]):
            assert {h.template_id for h in hits} == set(live)  # all of the gallery, nothing else
            assert all(split_key(h.subject_id)[0] == gallery for h in hits)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, seed=st.integers(0, 2**32 - 1))
def test_galleries_stay_isolated_through_every_operation(ops: list[tuple], seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        store: ObjectStore = open_storage((Path(folder) / "store").as_uri())
        shard = Shard.open(store, 0, 1, PDIM, PROPERTY_SETTINGS)
        model: dict[str, dict[str, dict[int, np.ndarray]]] = {}
        generations: dict[str, int] = {}  # existing galleries besides default
        dropped: dict[str, int] = {}  # the last generation of each deleted gallery
        published = 0
        for op in ops:
            kind, args = op[0], op[1:]
            if kind == "enrol" and (args[0] == DEFAULT_GALLERY or args[0] in generations):
                gallery, subject, n = args
                vectors = unit_vectors(rng, n, PDIM)
                ids = enrol(shard, gallery, subject, vectors, generations.get(gallery, 0))
                model.setdefault(gallery, {}).setdefault(subject, {}).update(zip(ids, vectors))
            elif kind == "delete":
                gallery, subject = args
                erased = shard.delete(subject_key(gallery, subject))
                assert erased == sorted(model.get(gallery, {}).pop(subject, {}))
            elif kind == "create" and args[0] not in generations:
                generations[args[0]] = create(shard, args[0])
            elif kind == "drop" and args[0] in generations:
                erased = drop(shard, args[0])
                dropped[args[0]] = generations.pop(args[0])
                assert sorted(erased) == sorted(t for ts in model.pop(args[0], {}).values() for t in ts)
            elif kind == "stale" and args[0] in dropped:
                with pytest.raises(NoSuchGalleryError):
                    enrol(shard, args[0], "late", unit_vectors(rng, 1, PDIM), dropped[args[0]])
            elif kind == "compact":
                published = compact(store, num_shards=1, dim=PDIM, settings=PROPERTY_SETTINGS, work_dir=folder).epoch
            elif kind == "swap" and published > shard.stats().snapshot_epoch:
                shard.swap_to(published)
            elif kind == "restore":
                shard.close()
                shard = Shard.open(store, 0, 1, PDIM, PROPERTY_SETTINGS)
            check_isolation(shard, model, generations)
