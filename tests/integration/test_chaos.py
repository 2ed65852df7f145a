"""A short chaos round against the session's service (the long one is scripts/chaos.py).

Enrol + delete + identify load while a shard actor's process, a Serve replica's process and a
compaction job (mid-swap) are SIGKILLed: every acknowledged enrolment is found afterwards, no
acknowledged delete comes back, and the service answers correctly again after each fault.
"""

from __future__ import annotations

import pytest

from proving.chaos import ChaosRun, KillCompactionJob, KillServeReplica, KillShardActor, Target
from proving.ray_processes import alive_actors
from ufme_ray import cluster
from ufme_ray.config import UfmeSettings

pytestmark = pytest.mark.ray

EMBEDDING_DIM = 128  # MobileFaceNet


def photos(faces_dir):
    """One photo per person (deepface's people: the other tests enrol LFW's)."""
    return [sorted(p.glob("*.jpg"))[0] for p in sorted((faces_dir / "deepface").iterdir()) if p.is_dir()]


def test_short_chaos_round_loses_and_resurrects_nothing(service, faces_dir):
    settings = UfmeSettings.load(storage_uri=service.storage_uri, gallery={"num_shards": 2},
                                 compaction={"task_num_cpus": 0.1, "retention_s": 0})
    target = Target(url=service.url, api_key=service.keys["admin"], dashboard_url=service.dashboard.address,
                    ray_token=cluster.ensure_auth_token(), settings=settings, embedding_dim=EMBEDDING_DIM)
    run = ChaosRun(target, photos(faces_dir), rate=2.0, workers=4, seed=7, request_timeout_s=60)
    pids_before = {a.name: a.pid for a in alive_actors(target.dashboard_url, target.ray_token)}
    try:
        run.run([KillShardActor(), KillServeReplica(), KillCompactionJob("swap")], warmup_s=8, settle_s=3,
                recovery_timeout_s=180, warmup_subjects=10)  # the final check covers at least ten
        run.settle_ambiguous(timeout_s=240)
        checked = run.verify()
    finally:
        for subject in run.ledger.snapshot()[0]:  # leave the session's gallery as it was for the other tests
            service.http.delete(f"/api/v1/subjects/{subject.subject_id}")

    assert run.violations == []
    assert [r.name for r in run.results] == ["kill shard actor", "kill serve replica", "kill compaction mid-swap"]
    assert all(r.recovery_s is not None for r in run.results), run.results
    for result in run.results[:2]:  # the killed processes were real, and Ray replaced them
        assert pids_before[result.notes["killed"]] == result.notes["pid"]
    assert run.results[2].notes["killed_job"] == "FAILED" and run.results[2].notes["reruns"][-1] == "SUCCEEDED"
    rows = {row["phase"]: row for row in run.report()}
    assert sum(row["acknowledged"] for row in rows.values()) >= 10
    assert checked["acknowledged"] + checked["erased"] >= 10
    assert all(row["lost"] == 0 and row["resurrected"] == 0 for row in rows.values())
