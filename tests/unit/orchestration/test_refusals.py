"""Refusals are written whole once per kind and window, counted otherwise, and bounded in kinds."""

from __future__ import annotations

from ufme_ray.audit import AuditRecord
from ufme_ray.orchestration.refusals import OVERFLOW, RefusalAggregator


def refusal(at: float, key_id: str = "kiosk", status: str = "403") -> AuditRecord:
    return AuditRecord(
        time=at, request_id=f"r{at}", key_id=key_id, operation="identify", subject_ids=[], thresholds={},
        outcome=status, detail="forbidden", client="10.0.0.7",
    )


def test_the_first_of_a_kind_is_written_and_the_rest_counted_until_the_window_ends():
    refusals = RefusalAggregator(window_s=60)
    assert refusals.offer(refusal(100.0)) == refusal(100.0)
    assert [refusals.offer(refusal(100.0 + i)) for i in range(1, 6)] == [None] * 5
    assert refusals.due(159.0) == []
    [aggregate] = refusals.due(160.0)
    assert (aggregate.count, aggregate.first_time, aggregate.time) == (5, 101.0, 105.0)
    assert aggregate.request_id == "aggregate-r100.0" and refusals.idle()
    # A new window: its first refusal is written whole again.
    assert refusals.offer(refusal(161.0)) is not None


def test_a_lone_refusal_leaves_no_aggregate():
    refusals = RefusalAggregator(window_s=60)
    refusals.offer(refusal(100.0))
    assert refusals.due(1000.0) == [] and refusals.idle()


def test_kinds_beyond_the_bound_fold_into_one_per_operation_status_and_code():
    refusals = RefusalAggregator(window_s=60, max_kinds=2)
    written = [refusals.offer(refusal(100.0 + i, key_id=f"key-{i}")) for i in range(50)]
    kept = [r for r in written if r is not None]
    assert [r.key_id for r in kept] == ["key-0", "key-1", OVERFLOW]
    assert kept[2].client == OVERFLOW
    [folded] = refusals.drain()
    assert folded.key_id == OVERFLOW and folded.count == 47


def test_records_written_per_window_stay_bounded_whatever_the_rate():
    refusals = RefusalAggregator(window_s=60, max_kinds=10)
    written = sum(refusals.offer(refusal(100.0 + i / 1000, key_id=f"k{i % 500}", status=str(400 + i % 3))) is not None for i in range(100_000))
    aggregates = len(refusals.drain())
    # 10 kinds apart + 3 folded kinds (one per status), each at most once whole and once aggregated.
    assert written == 13 and aggregates == 13
