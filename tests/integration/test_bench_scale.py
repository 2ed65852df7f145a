"""scripts/bench_scale.py's whole path at 20k templates on the session's cluster (seconds, not hours).

Real shard actors (in the benchmark's own namespace, beside the service's), enrolment through
their batch path, two compactions, search against exact, a SIGKILLed shard restored, the sizing
arithmetic from what was measured.
"""

from __future__ import annotations

import json
import math

import pytest
import ray

from scripts import bench_scale
from ufme_ray.serving.shard_actor import shard_actor_name

pytestmark = pytest.mark.ray

SIZE = 20_000
DIM = 32


@pytest.fixture(scope="module")
def measured(ray_session, tmp_path_factory):
    run = bench_scale.ScaleRun(
        size=SIZE, dim=DIM, shards=2, work_dir=tmp_path_factory.mktemp("scale"), compact_every=SIZE // 2,
        queries=60, enrolled_queries=60, task_num_cpus=0.1,  # the service holds most of the session cluster's CPUs
        exact_max_vectors=1000,  # IVF-PQ + rerank, as at scale, instead of the flat index of small shards
    )
    with bench_scale.MemoryWatch(interval_s=0.2) as watch:
        return bench_scale.run_scale(run, watch)


def test_every_template_is_enrolled_and_compacted(measured):
    assert [c["templates"] for c in measured["compactions"]] == [SIZE // 2]
    assert measured["final_compaction"]["status"] == "compacted"
    assert measured["final_compaction"]["vectors_out"] == SIZE
    assert set(measured["final_compaction"]["steps_s"]) == set(bench_scale.COMPACTION_STEPS)
    assert measured["enrol"]["vectors_per_s"] > 0
    enrolled, compacted = measured["enrolled"]["memory"], measured["compacted"]["memory"]
    assert sum(m["templates"] for m in enrolled) == sum(m["templates"] for m in compacted) == SIZE
    assert sum(m["delta_rows"] for m in enrolled) == SIZE // 2  # the last stage, until the final compaction
    assert all(m["delta_rows"] == 0 for m in compacted)


def test_search_finds_the_exact_nearest_template_in_both_states(measured):
    before, after = measured["enrolled"]["search"], measured["compacted"]["search"]
    assert before["actors"]["recall_at_1"] >= 0.95 and before["actors"]["identity_top1"] >= 0.9
    assert after["index_kind"] == "ivfpq" and 0 < after["nprobe"] <= after["nlist"]
    assert after["actors"]["recall_at_1"] >= 0.95 and after["plain_faiss"]["recall_at_1"] >= 0.95
    assert after["actors_equal_plain_top1"] == 1.0  # same snapshots, same parameters, same answers
    assert after["actors"]["identity_top1"] >= 0.9
    assert 0 < after["plain_faiss"]["p50_ms"] and 0 < after["actors"]["p50_ms"] <= after["actors"]["p99_ms"]


@pytest.mark.parametrize("state", ["enrolled", "compacted"])
def test_a_killed_shard_restores_the_same_state_and_answers(measured, state):
    restore = measured[state]["restore"]
    assert restore["new_pid"] != restore["killed_pid"]
    assert restore["stats_equal"] and restore["answers_equal"]
    assert 0 < restore["answering_s"] <= restore["ready_s"]


def test_bytes_per_vector_match_the_formats(measured):
    vector = measured["per_vector"]
    assert vector["accounted"]["codes_and_ids"] == 32 + 8  # 32-byte PQ code + int64 id
    assert vector["accounted"]["rerank"] == 2 * DIM  # float16
    record = 8 + 19 + len("subject-000000000") + 16 + 4 * DIM  # record head, payload head, subject, tail, vector
    assert record <= measured["log_bytes_per_event"] < record + 4
    assert vector["snapshot_on_disk"] > 40 + 2 * DIM


def test_the_shard_actors_are_gone_afterwards(measured):
    for shard in range(measured["shards"]):
        with pytest.raises(ValueError):
            ray.get_actor(shard_actor_name(shard), namespace=bench_scale.NAMESPACE)


def test_sizing_is_arithmetic_from_the_measured_bytes(measured):
    rows = bench_scale.sizing(measured, sizes=(40_000_000,), shard_counts=(5, 20))
    five, twenty = rows
    assert five["per_shard"] == 8_000_000 and twenty["per_shard"] == 2_000_000
    assert five["rerank_gib"] == round(8_000_000 * 2 * DIM / bench_scale.GIB, 2)
    assert five["resident_gib"] > five["resident_mmap_gib"] and five["swap_peak_gib"] > five["resident_gib"]
    for row in rows:
        assert row["node_ram_gib"] * 0.8 >= row["swap_peak_gib"] and math.log2(row["node_ram_gib"]).is_integer()
    assert five["snapshot_gb"] == round(40_000_000 * measured["per_vector"]["snapshot_on_disk"] / 1e9, 1)


def test_report_from_prints_the_saved_tables(measured, tmp_path, capsys):
    saved = tmp_path / "scale.json"
    saved.write_text(json.dumps({"runs": [measured]}))
    bench_scale.main(["--report-from", str(saved)])
    out = capsys.readouterr().out
    assert f"{SIZE:>11,} {DIM:>4} compacted" in out and f"{SIZE:>11,} {DIM:>4}  enrolled" in out


def test_cold_compaction_starts_the_shards_from_the_snapshot(ray_session, tmp_path):
    run = bench_scale.ScaleRun(
        size=SIZE // 2, dim=DIM, shards=2, work_dir=tmp_path, compact_every=SIZE, queries=30, enrolled_queries=0,
        task_num_cpus=0.1, exact_max_vectors=1000, cold_compaction=True,
    )
    with bench_scale.MemoryWatch(interval_s=0.2) as watch:
        measured = bench_scale.run_scale(run, watch)
    assert set(measured["enrolled"]) == {"memory"}  # no probes asked for before compaction
    assert measured["final_compaction"]["status"] == "compacted" and measured["final_compaction"]["steps_s"]["swap"] < 1
    assert measured["final_compaction_peak_rss"]["shards"] == [0, 0]  # no shard process ran during the build
    assert measured["cold_start_s"] > 0
    compacted = measured["compacted"]
    assert sum(m["templates"] for m in compacted["memory"]) == SIZE // 2
    assert compacted["search"]["actors"]["recall_at_1"] >= 0.95
    assert compacted["restore"]["stats_equal"] and compacted["restore"]["answers_equal"]
