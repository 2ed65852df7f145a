"""Head loss and node loss on a cluster of nodes of its own (the long runs are `scripts/chaos.py
--faults head-loss node-loss`).

The cluster is what an operator starts with `ufme-ray`: a Redis server for GCS fault tolerance,
the head (`up --redis --shard-nodes`: the GCS, the Serve replicas) and a shard node (`join`) that
holds both shard actors, each with its own temp folder and ports beside the session's cluster.
Under enrol + delete + identify load, every process of the head is SIGKILLed and the head started
again, then the shard node's raylet is SIGKILLed and a new shard node joins: nothing acknowledged
is lost, no acknowledged delete comes back, the service answers correctly again within 60 s, and
no write is answered with a 5xx other than 503.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from proving.chaos import NODE_LOSS_RECOVERY_S, ChaosRun, Fault, HeadLoss, NodeLoss, Target, one_photo_per_identity
from proving.local_service import HeadPorts, LocalService
from ufme_ray import cluster
from ufme_ray.config import UfmeSettings

pytestmark = pytest.mark.nodes

EMBEDDING_DIM = 128  # MobileFaceNet
NUM_SHARDS = 2


@pytest.fixture(scope="module")
def nodes_service(redis_server, model_dir, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("nodes-data")
    # Short: Ray's socket paths inside the temp folder must fit in 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ufme-nd-", dir="/tmp"))
    env = {**os.environ, "UFME_DATA_DIR": str(data_dir), "UFME_STORAGE_URI": (data_dir / "store").as_uri(),
           "UFME_MODEL_DIR": str(model_dir)}
    service = LocalService(env=env, temp_dir=temp_dir, ports=HeadPorts.free(), log_path=data_dir / "service.log",
                           redis=redis_server, shard_slots=NUM_SHARDS)
    try:
        service.up()
        yield service
    finally:
        service.down()
        for folder in (temp_dir, *temp_dir.parent.glob(f"{temp_dir.name}-node-*")):
            shutil.rmtree(folder, ignore_errors=True)


def chaos_round(service: LocalService, faces_dir: Path, fault: Fault) -> tuple[ChaosRun, dict]:
    settings = UfmeSettings.load(storage_uri=service.env["UFME_STORAGE_URI"], gallery={"num_shards": NUM_SHARDS})
    api_key = (Path(service.env["UFME_DATA_DIR"]) / "admin.key").read_text().strip()
    target = Target(url=service.url, api_key=api_key, dashboard_url=service.dashboard_url,
                    ray_token=cluster.ensure_auth_token(), settings=settings, embedding_dim=EMBEDDING_DIM)
    photos = one_photo_per_identity([faces_dir / "deepface", faces_dir / "lfw"])
    run = ChaosRun(target, photos, rate=1.5, workers=4, seed=13, request_timeout_s=15)
    try:
        # The warm-up lasts until ten subjects are decided, so the final check covers at least ten
        # however busy the machine (12 s alone once gave nine in the full suite).
        run.run([fault], warmup_s=12, settle_s=8, recovery_timeout_s=180, warmup_subjects=10)
        run.settle_ambiguous(timeout_s=180)
        checked = run.verify()
    finally:  # the next round enrols the same photos: free them (the duplicate check would refuse them)
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=60) as http:
            for subject in run.ledger.snapshot()[0]:
                http.delete(f"/api/v1/subjects/{subject.subject_id}")
    return run, checked


def assert_survived(run: ChaosRun, checked: dict) -> dict:
    """Nothing lost or resurrected, correct answers again within the bound, every failed write a clean 503."""
    assert run.violations == []
    (result,) = run.results
    assert result.recovery_s is not None and result.recovery_s <= NODE_LOSS_RECOVERY_S, result
    rows = {row["phase"]: row for row in run.report()}
    assert all(row["lost"] == 0 and row["resurrected"] == 0 for row in rows.values())
    assert run.broken_promises() == [], rows[result.name]
    assert sum(row["acknowledged"] for row in rows.values()) >= 10
    assert checked["acknowledged"] + checked["erased"] >= 10
    print(f"\n{result.name}: recovery {result.recovery_s} s, {result.notes}; {rows[result.name]}")
    return result.notes


def test_head_loss_keeps_the_shards_and_everything_acknowledged(nodes_service, faces_dir):
    run, checked = chaos_round(nodes_service, faces_dir, HeadLoss(nodes_service.head_processes, nodes_service.up))
    notes = assert_survived(run, checked)
    assert notes["killed"] > 5  # GCS, raylet, dashboard, controller, proxy, replicas
    # The shard actors on the shard node lived through it: the same processes, nothing to restore.
    assert notes["shards_after"] == notes["shards_before"] and len(notes["shards_before"]) == NUM_SHARDS


def test_node_loss_restarts_the_shards_on_a_new_node(nodes_service, faces_dir):
    lost_node = nodes_service.shard_node
    run, checked = chaos_round(nodes_service, faces_dir, NodeLoss(nodes_service.shard_node_raylet,
                                                                  nodes_service.replace_shard_node))
    notes = assert_survived(run, checked)
    assert nodes_service.shard_node != lost_node
    # Both shard actors restarted (new processes, on the new node) and restored from storage.
    before, after = notes["shards_before"], notes["shards_after"]
    assert after.keys() == before.keys() and len(after) == NUM_SHARDS
    assert not set(after.values()) & set(before.values())
    on_new_node = {p.pid for p in cluster.cluster_processes(nodes_service.shard_node) if p.cmdline()[:1] == ["ray::ShardActor"]}
    assert on_new_node == set(after.values())
