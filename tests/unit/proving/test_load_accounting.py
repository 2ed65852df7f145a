"""The load run's bookkeeping without a service: outcome kinds, per-endpoint stats, memory growth,
the subjects it enrols and deletes."""

from __future__ import annotations

import random

import pytest

from proving.load_material import Photo
from proving.load_stats import SKIPPED, Result, endpoint_stats, kind
from proving.load_subjects import LoadSubjects
from proving.memory import max_growth, memory_growth


@pytest.mark.parametrize("operation, outcome, expected", [
    ("enrol", "201", "ok"), ("enrol", "200", "error"), ("enrol", "409", "expected"), ("enrol", "422", "expected"),
    ("verify", "422", "expected"), ("verify", "409", "error"), ("identify", "422", "error"), ("delete", "404", "error"),
    ("identify", "503", "error"), ("identify", "timeout", "error"), ("analyze", "ConnectError", "error"),
    ("delete", SKIPPED, SKIPPED),
])
def test_outcome_kinds(operation, outcome, expected):
    assert kind(Result(operation, 0.0, 1.0, outcome)) == expected


def test_endpoint_stats_count_kinds_and_leave_skipped_out_of_latency():
    results = [Result("enrol", 0, 100, "201"), Result("enrol", 1, 10, "409"), Result("enrol", 2, 20, "503"),
               Result("delete", 3, 5, SKIPPED), Result("delete", 4, 30, "200")]
    stats = endpoint_stats(results, duration_s=10)
    assert (stats["enrol"]["requests"], stats["enrol"]["ok"], stats["enrol"]["expected"], stats["enrol"]["errors"]) == (3, 1, {"409": 1}, {"503": 1})
    assert stats["delete"]["requests"] == 1 and stats["delete"]["skipped"] == 1 and stats["delete"]["max_ms"] == 30
    assert stats["all"]["requests"] == 4 and stats["all"]["error_rate"] == 0.25 and stats["all"]["rate_per_s"] == 0.4


def sample(*processes):
    return {"processes": [{"pid": pid, "name": name, "class_name": "X", "rss_bytes": rss} for pid, name, rss in processes]}


def test_memory_growth_compares_only_processes_in_both_samples():
    rows = memory_growth(sample((1, "a", 100), (2, "b", 200), (3, "gone", 50)), sample((1, "a", 104), (2, "b", 190), (4, "new", 80)))
    growth = {row.name: row.growth for row in rows}
    assert growth == {"a": pytest.approx(0.04), "b": pytest.approx(-0.05), "gone": None, "new": None}
    assert max_growth(rows) == pytest.approx(0.04)
    # A pid reused by another actor is not the same process.
    assert [row.growth for row in memory_growth(sample((1, "a", 100)), sample((1, "b", 100)))] == [None, None]
    assert max_growth(memory_growth(sample((1, "a", 100)), sample((2, "b", 100)))) is None


def test_load_subjects_enrol_free_identities_then_duplicates_and_delete_oldest():
    photos = {identity: [Photo(identity, f"{identity}.jpg", b"")] for identity in ("p", "q")}
    subjects = LoadSubjects(photos, "t", random.Random(0))
    first, first_photo = subjects.next_enrolment()
    second, second_photo = subjects.next_enrolment()
    assert {first_photo.identity, second_photo.identity} == {"p", "q"}  # both free: no duplicate
    subjects.enrol_answered(first, first_photo, 201)
    subjects.enrol_answered(second, second_photo, 422)  # refused: its identity is free again
    third, third_photo = subjects.next_enrolment()
    assert third_photo.identity == second_photo.identity
    subjects.enrol_answered(third, third_photo, None)  # no answer: may exist, erased after the run
    fourth, fourth_photo = subjects.next_enrolment()
    assert fourth_photo.identity == second_photo.identity
    subjects.enrol_answered(fourth, fourth_photo, 201)
    duplicate, duplicate_photo = subjects.next_enrolment()  # nothing free: a photo of a stored identity
    subjects.enrol_answered(duplicate, duplicate_photo, 409)
    assert len({first, second, third, fourth, duplicate}) == 5
    assert [subjects.next_deletion(), subjects.next_deletion(), subjects.next_deletion()] == [first, fourth, None]
    subjects.delete_answered(first, 200)
    subjects.delete_answered(fourth, 503)  # failed: erased after the run
    assert subjects.leftovers() == sorted([third, fourth])
