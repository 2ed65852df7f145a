"""The duplicate screen of a batch (issue 19 item 9: the check and the write as one step)."""

from __future__ import annotations

import numpy as np

from ufme_ray.gallery.duplicates import screen
from ufme_ray.gallery.merge import Candidate
from tests.unit.gallery.conftest import unit_vectors


def test_one_face_under_eight_ids_in_one_batch_passes_once() -> None:
    face = unit_vectors(np.random.default_rng(1), 1, 16)
    ids = [f"id-{i}" for i in range(8)]
    screened = screen(ids, np.repeat(face, 8, axis=0), [[] for _ in ids], 0.5, reject=True)
    assert [s.accepted for s in screened] == [True] + [False] * 7
    assert {s.duplicate_of.subject_id for s in screened[1:]} == {"id-0"}
    assert all(s.of_batch == 0 for s in screened[1:])


def test_the_gallery_candidates_and_the_policy_decide() -> None:
    rng = np.random.default_rng(2)
    faces = unit_vectors(rng, 3, 16)
    gallery = [
        [Candidate("ana", 0.99, 7), Candidate("old", 0.8, 3)],  # its own subject first: the other one counts
        [Candidate("old", 0.4, 3)],  # below the threshold
        [],
    ]
    refused = screen(["ana", "bo", "cy"], faces, gallery, 0.5, reject=True)
    assert [s.accepted for s in refused] == [False, True, True]
    assert refused[0].duplicate_of == Candidate("old", 0.8, 3) and refused[0].of_batch is None
    warned = screen(["ana", "bo", "cy"], faces, gallery, 0.5, reject=False)
    assert [s.accepted for s in warned] == [True, True, True] and warned[0].duplicate_of.subject_id == "old"
    # The same subject twice in a batch (several photos of one person) is no duplicate.
    same = screen(["ana", "ana"], np.repeat(faces[:1], 2, axis=0), [[], []], 0.5, reject=True)
    assert [(s.accepted, s.duplicate_of) for s in same] == [(True, None), (True, None)]


def test_a_refused_face_does_not_refuse_the_faces_after_it() -> None:
    face = unit_vectors(np.random.default_rng(3), 1, 16)
    vectors = np.repeat(face, 3, axis=0)
    gallery = [[Candidate("first", 0.95, 1)]] * 3
    screened = screen(["a", "b", "first"], vectors, gallery, 0.5, reject=True)
    # a and b are refused as "first"; "first" itself passes, and a refused face is never a reason.
    assert [s.accepted for s in screened] == [False, False, True]
    assert [s.duplicate_of.subject_id for s in screened[:2]] == ["first", "first"]
