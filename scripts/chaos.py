"""Chaos against a service started by `ufme-ray up`: faults under steady load, nothing acknowledged lost.

For each storage (file://, and S3 on a SeaweedFS server this script starts on 127.0.0.1), the
script starts the service with `ufme-ray up` (its own Ray temp folder and ports, a fresh data
folder), runs enrol + delete + identify at --rate requests/s and injects, one at a time: SIGKILL
of a shard actor's process, of a Serve replica, of the compaction job mid-build and mid-swap, an
S3 server restart (S3 only), `ufme-ray down` + `ufme-ray up`, an upgrade as KubeRay runs one (a second
cluster started on the same storage with its own temp folder and ports, the load moved to it the
moment it is ready, the first one stopped after a delay); then a mixed round on the new cluster. At
the end every acknowledged enrolment must be found and no acknowledged delete may come back.

    python scripts/chaos.py --storage file s3 --rate 3 --json bench-results/chaos.json

`--faults head-loss node-loss` (only when named) runs on a cluster of nodes instead: a Redis server
this script starts on 127.0.0.1 (GCS fault tolerance, `up --redis`), the head, and a shard node
(`ufme-ray join`) that holds the shard actors (`up --shard-nodes`). head-loss SIGKILLs every
process of the head and starts it again with the same `up`; node-loss SIGKILLs the shard node's
raylet and a new shard node joins, as KubeRay replaces a pod.

    python scripts/chaos.py --storage file s3 --faults head-loss node-loss --json bench-results/chaos_nodes.json

Exit 1 if anything acknowledged was lost or resurrected, a fault did not recover, or a write was
acknowledged while the S3 server was down; during an upgrade also if a read failed or a write failed
with anything but 503; after a head or node loss also if the service took longer than 60 s to
answer again, or a write was answered with a 5xx other than 503.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.chaos import (
    ChaosRun, DownUp, Fault, HeadLoss, KillCompactionJob, KillServeReplica, KillShardActor, Mixed, NodeLoss, RestartS3,
    Target, Upgrade, one_photo_per_identity,
)
from proving.local_service import HeadPorts, LocalService
from proving.portable import portable
from proving.redis_server import RedisServer
from proving.seaweedfs import SeaweedS3
from ufme_ray import cluster
from ufme_ray.config import UfmeSettings
from ufme_ray.jobs.compact import embedding_dim

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"
NODE_FAULTS = {HeadLoss.key, NodeLoss.key}  # they need the cluster of nodes (GCS fault tolerance, a shard node)
FAULT_KEYS = [KillShardActor.key, KillServeReplica.key, KillCompactionJob("build").key, KillCompactionJob("swap").key,
              RestartS3.key, DownUp.key, Upgrade.key, Mixed.key, HeadLoss.key, NodeLoss.key]


# The new cluster of an upgrade: its own temp folder, and every port this far from the first's.
NEW_CLUSTER_PORT_OFFSET = 10


def new_cluster(service: LocalService, ports: HeadPorts, env: dict[str, str], args: argparse.Namespace) -> LocalService:
    shifted = HeadPorts(*(port + NEW_CLUSTER_PORT_OFFSET for port in dataclasses.astuple(ports)))
    return LocalService(env=env, temp_dir=args.temp_dir.with_name(args.temp_dir.name + "-new"), ports=shifted,
                        log_path=service.log_path.with_name("service-new.log"))


def upgrade(old: LocalService, new: LocalService, target: Target, args: argparse.Namespace) -> Upgrade:
    def start_new() -> Target:
        new.up()  # returns once /ready answers 200: the application is RUNNING, every shard restored
        return dataclasses.replace(target, url=new.url, dashboard_url=new.dashboard_url)

    return Upgrade(start_new, old.down, deletion_delay_s=args.deletion_delay_s)


def faults_for(storage: str, service: LocalService, new_service: LocalService, target: Target, s3: SeaweedS3 | None,
               args: argparse.Namespace) -> list[Fault]:
    singles: list[Fault] = [KillShardActor(), KillServeReplica(), KillCompactionJob("build"), KillCompactionJob("swap")]
    mixed: list[Fault] = [KillShardActor(), KillServeReplica(), KillCompactionJob("swap")]
    if s3 is not None:
        singles.append(RestartS3(s3, args.s3_down_s))
        mixed.append(RestartS3(s3, args.s3_down_s))
    # The upgrade comes after the faults that stop the first cluster; the mixed round runs on the new one.
    faults = [*singles, DownUp(service.down, service.up), upgrade(service, new_service, target, args), Mixed(mixed)]
    if args.faults is None:
        return faults
    faults += [HeadLoss(service.head_processes, service.up), NodeLoss(service.shard_node_raylet, service.replace_shard_node)]
    return [f for f in faults if f.key in args.faults]


def run_storage(storage: str, args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"ufme-chaos-{storage}-"))
    env = {**os.environ, "UFME_DATA_DIR": str(workdir / "data")}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)
        s3 = None
        if storage == "s3":
            s3 = SeaweedS3(workdir / "s3")
            cleanup.callback(s3.stop)
            s3.start()
            env.update(s3.env)
            env["UFME_STORAGE_URI"] = s3.uri("chaos-gallery")
        else:
            env["UFME_STORAGE_URI"] = (workdir / "data" / "store").as_uri()
        os.environ.update({k: v for k, v in env.items() if k.startswith(("UFME_", "AWS_"))})  # the harness's own settings
        redis = None
        if NODE_FAULTS & set(args.faults or ()):
            redis = RedisServer(workdir / "redis")
            cleanup.callback(redis.stop)
            redis.start()
        ports = HeadPorts(args.port, args.gcs_port, args.dashboard_port, args.metrics_port, args.agent_port)
        service = LocalService(env=env, temp_dir=args.temp_dir, ports=ports, log_path=workdir / "service.log", redis=redis)
        new_service = new_cluster(service, ports, env, args)
        print(f"[{storage}] starting the service with `ufme-ray up` (log: {service.log_path}) ...", flush=True)
        cleanup.callback(service.down)
        cleanup.callback(new_service.down)
        service.up()
        settings = UfmeSettings.load()
        target = Target(
            url=service.url, api_key=(workdir / "data" / "admin.key").read_text().strip(),
            dashboard_url=service.dashboard_url, ray_token=cluster.ensure_auth_token(), settings=settings,
            embedding_dim=embedding_dim(settings),
        )
        run = ChaosRun(target, one_photo_per_identity([FACES / "lfw", FACES / "deepface"]), rate=args.rate,
                       workers=args.workers, seed=args.seed)
        started = time.monotonic()
        run.run(faults_for(storage, service, new_service, target, s3, args), warmup_s=args.warmup_s, settle_s=args.settle_s)
        run.settle_ambiguous()
        checked = run.verify()
        rows = run.report()
        return {
            "storage": storage,
            "duration_s": round(time.monotonic() - started, 1),
            "rows": rows,
            "checked": checked,
            "violations": [v.__dict__ for v in run.violations],
            "outage_writes": dict(run.outage_writes),
            "refused_photos": len(run.ledger.refused_photos),
            "failed": failures(rows, run, s3 is not None),
        }


def failures(rows: list[dict], run: ChaosRun, with_s3: bool) -> list[str]:
    problems = [f"{v.kind}: {v.subject_id} ({v.phase}): {v.detail}" for v in run.violations]
    problems += [f"{r.name}: no recovery" for r in run.results if r.recovery_s is None]
    problems += run.broken_promises()
    false_acks = sum(count for status, count in run.outage_writes.items() if status.startswith("2"))
    if false_acks:
        problems.append(f"{false_acks} writes acknowledged while the S3 server was down")
    if with_s3 and any(r.name == RestartS3.name for r in run.results) and not run.outage_writes:
        problems.append("no write was attempted during the S3 outage: the outage proved nothing")
    return problems


def print_table(result: dict) -> None:
    print(f"\n## {result['storage']} ({result['duration_s']} s; checked {result['checked']})\n")
    print("| phase | requests | acknowledged | lost | resurrected | identify misses | errors by status | recovery s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in result["rows"]:
        errors = ", ".join(f"{status}: {count}" for status, count in row["errors"].items()) or "-"
        recovery = "-" if row["recovery_s"] is None and row["injected_s"] is None else row["recovery_s"]
        print(f"| {row['phase']} | {row['requests']} | {row['acknowledged']} | {row['lost']} | {row['resurrected']} "
              f"| {row['identify_misses']} | {errors} | {recovery} |")
    for row in result["rows"]:
        if row["phase"] in (HeadLoss.name, NodeLoss.name):
            notes = row["notes"]
            print(f"\n{row['phase']}: shard actor processes {notes['shards_before']} -> {notes['shards_after']}")
    if result["storage"] == "s3":
        print(f"\nwrites sent while the S3 server was down, by status: {result['outage_writes']}")
    print(f"failures: {result['failed'] or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", nargs="+", choices=["file", "s3"], default=["file", "s3"])
    parser.add_argument("--rate", type=float, default=3.0, help="requests per second (enrol 40%%, delete 20%%, identify 40%%)")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--settle-s", type=float, default=20.0, help="load between a fault's recovery and the next fault")
    parser.add_argument("--s3-down-s", type=float, default=10.0, help="how long the S3 server stays down")
    parser.add_argument("--deletion-delay-s", type=float, default=15.0,
                        help="upgrade: the old cluster stops this long after the load moved to the new one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faults", nargs="+", choices=FAULT_KEYS,
        help="only these faults (default: all but head-loss and node-loss, then mixed); head-loss and node-loss run on a "
        "cluster of nodes with GCS fault tolerance",
    )
    parser.add_argument("--temp-dir", type=Path, default=Path("/tmp/ufme-chaos"), help="Ray temp folder of the cluster")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--gcs-port", type=int, default=6579)
    parser.add_argument("--dashboard-port", type=int, default=8565)
    parser.add_argument("--metrics-port", type=int, default=8380)
    parser.add_argument("--agent-port", type=int, default=52666)
    parser.add_argument("--json", type=Path, default=REPO / "bench-results" / "chaos.json")
    args = parser.parse_args()
    if NODE_FAULTS & set(args.faults or ()) and DownUp.key in args.faults:
        # `down` stops this machine's head only: on a GCS fault-tolerant cluster the shard node keeps the
        # cluster's state in Redis, so `up` would be a head loss again, not a cold start.
        parser.error("down-up does not run on the cluster of nodes that head-loss and node-loss need: run it apart")
    if NODE_FAULTS & set(args.faults or ()) and Upgrade.key in args.faults:
        # The upgrade moves the load to a second cluster and stops the first: the node faults that
        # follow it would act on the stopped one.
        parser.error("upgrade does not run with head-loss and node-loss: run it apart")
    results = []
    for storage in args.storage:
        results.append(run_storage(storage, args))
        print_table(results[-1])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": {k: portable(v) for k, v in vars(args).items()}, "machine": platform.node(),
                                     "results": results}, indent=2))
    print(f"\nwrote {args.json}")
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
