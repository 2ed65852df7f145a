"""An upgrade as KubeRay runs one, under load, there and back (the long one: scripts/chaos.py --faults upgrade).

A second Ray cluster starts beside the session's on the same storage and restores the gallery
without disturbing the first one's writes; the load moves to it the moment it is ready; the first
cluster's shards are fenced and hand over. Then the way back: the session cluster's shard actors
restart (as a new cluster's would), the load moves back, the second cluster stops. Nothing
acknowledged is lost, no read fails, and a write fails only with a clean 503.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest
import ray

from proving.chaos import ChaosRun, Target, Upgrade
from proving.local_service import HeadPorts
from tests.integration.conftest import NUM_SHARDS
from tests.integration.test_chaos import EMBEDDING_DIM, photos
from ufme_ray import cluster
from ufme_ray.config import UfmeSettings
from ufme_ray.serving.shard_calls import HANDED_OVER

pytestmark = pytest.mark.ray


def roles(service) -> list[str]:
    return [ray.get(service.shard(i).ready.remote(), timeout=60)["role"] for i in range(NUM_SHARDS)]


def test_upgrade_there_and_back_loses_nothing(service, faces_dir):
    token = cluster.ensure_auth_token()
    settings = UfmeSettings.load(storage_uri=service.storage_uri, gallery={"num_shards": NUM_SHARDS})
    old = Target(url=service.url, api_key=service.keys["admin"], dashboard_url=service.dashboard.address,
                 ray_token=token, settings=settings, embedding_dim=EMBEDDING_DIM)
    ports = HeadPorts.free()
    temp_dir = Path(tempfile.mkdtemp(prefix="ufme-new-", dir="/tmp"))
    new = Target(url=f"http://127.0.0.1:{ports.port}", api_key=old.api_key, dashboard_url=f"http://127.0.0.1:{ports.dashboard_port}",
                 ray_token=token, settings=settings, embedding_dim=EMBEDDING_DIM)
    seen: dict[str, object] = {}

    def start_new() -> Target:
        cluster.start_local_head(num_cpus=2, gcs_port=ports.gcs_port, dashboard_port=ports.dashboard_port,
                                 metrics_port=ports.metrics_port, agent_port=ports.agent_port, temp_dir=temp_dir)
        config = copy.deepcopy(service.base_config)
        config["http_options"] = {"host": "127.0.0.1", "port": ports.port}
        cluster.DashboardClient(new.dashboard_url, token).deploy(config)
        ready = cluster.wait_until_ready(new.url, timeout_s=300)
        # Restored as followers: the session cluster still holds every writer claim.
        seen["new_roles_when_ready"] = [shard["role"] for shard in ready["detail"]]
        seen["old_roles_when_new_ready"] = roles(service)
        return new

    def old_fenced() -> None:
        # The session cluster's shards noticed the newer writer and follow it; a change sent there
        # now gets a clean 503 and reads still answer.
        seen["old_roles_after_switch"] = roles(service)
        refused = httpx.delete(f"{service.url}/api/v1/subjects/nobody-{temp_dir.name}", headers={"Authorization": f"Bearer {old.api_key}"}, timeout=60)
        seen["old_write"] = (refused.status_code, refused.headers.get("retry-after"), refused.json())
        seen["old_read"] = service.http.get("/api/v1/gallery").status_code

    def restart_old() -> Target:
        for index in range(NUM_SHARDS):  # what a new cluster's shard actors do: restore, claiming nothing
            ray.kill(service.shard(index), no_restart=False)
        cluster.wait_until_ready(old.url, timeout_s=300)
        seen["restarted_roles"] = roles(service)
        return old

    def stop_new() -> None:
        cluster.stop_local_ray(temp_dir)

    run = ChaosRun(old, photos(faces_dir), rate=2.0, workers=4, seed=11, request_timeout_s=60)
    try:
        run.run([Upgrade(start_new, old_fenced, deletion_delay_s=5, name="upgrade"),
                 Upgrade(restart_old, stop_new, deletion_delay_s=5, name="upgrade back")],
                warmup_s=8, settle_s=3, recovery_timeout_s=180, warmup_subjects=10)  # the final check covers ten
        run.settle_ambiguous(timeout_s=240)
        checked = run.verify()
    finally:
        cluster.stop_local_ray(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for subject in run.ledger.snapshot()[0]:  # leave the session's gallery as it was for the other tests
            service.http.delete(f"/api/v1/subjects/{subject.subject_id}")

    assert seen["new_roles_when_ready"] == ["follower"] * NUM_SHARDS
    assert seen["old_roles_when_new_ready"] == ["writer"] * NUM_SHARDS
    assert seen["old_roles_after_switch"] == ["handed_over"] * NUM_SHARDS
    status, retry_after, body = seen["old_write"]
    assert (status, retry_after, body["error"]["code"], body["error"]["message"]) == (503, "5", "not_ready", HANDED_OVER)
    assert seen["old_read"] == 200
    assert seen["restarted_roles"] == ["follower"] * NUM_SHARDS
    assert roles(service) == ["writer"] * NUM_SHARDS  # the load's first requests made them the writers again
    assert run.violations == []
    assert run.broken_promises() == []
    assert all(r.recovery_s is not None for r in run.results), run.results
    rows = {row["phase"]: row for row in run.report()}
    for phase in ("upgrade", "upgrade back"):
        assert rows[phase]["acknowledged"] > 0, rows[phase]
        assert rows[phase]["identify_misses"] == 0, rows[phase]
    assert checked["acknowledged"] + checked["erased"] >= 10
