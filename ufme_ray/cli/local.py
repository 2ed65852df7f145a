"""`ufme-ray up | down | join | leave | demo`: the service on a (by default local) Ray cluster, and
worker nodes joining it; the sequences themselves are `ufme_ray.cluster.provision`."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from tqdm import tqdm

from ufme_ray.cli.common import EXIT_OK, UsageError, load_settings, say
from ufme_ray.cluster import GcsRedis, cluster_temp_dir
from ufme_ray.cluster.provision import LocalHead, WorkerNode
from ufme_ray.client import UfmeClient, find_api_key


class _Progress:
    """Provisioning lines on stdout; a tqdm bar on stderr while waiting for /ready."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None

    def line(self, text: str) -> None:
        self.close()
        say(text)

    def waiting(self, last: str) -> None:
        if self._bar is None:
            self._bar = tqdm(desc="waiting for /ready", unit="s", bar_format="{desc}: {elapsed} {postfix}")
        self._bar.set_postfix_str(last[:60])
        self._bar.update()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# KubeRay's name for it (gcsFaultToleranceOptions.redisPassword reaches the head as REDIS_PASSWORD).
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"


def _gcs_redis(args: argparse.Namespace) -> GcsRedis | None:
    """--redis with its password from --redis-password-file or REDIS_PASSWORD, never from the command
    line (Ray passes it on to the GCS itself)."""
    if args.redis is None:
        if args.redis_password_file is not None:
            raise UsageError("--redis-password-file needs --redis")
        return None
    password = os.environ.get(REDIS_PASSWORD_ENV)
    if args.redis_password_file is not None:
        password = args.redis_password_file.read_text().strip()
    return GcsRedis(args.redis, password, args.redis_namespace)


def cmd_up(args: argparse.Namespace) -> int:
    from ufme_ray.cluster import provision

    head_fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(LocalHead) if f.name != "redis"}
    progress = _Progress()
    try:
        provision.up(
            load_settings(args),
            serve_config=args.serve_config,
            address=args.address,
            head=LocalHead(**head_fields, redis=_gcs_redis(args)),
            port=args.port,
            shards=args.shards,
            shard_nodes=args.shard_nodes,
            timeout_s=args.timeout_s,
            report=progress.line,
            on_wait=progress.waiting,
        )
    finally:
        progress.close()
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from ufme_ray.cluster import provision

    provision.down(address=args.address, head=LocalHead(dashboard_port=args.dashboard_port, temp_dir=args.temp_dir), report=say)
    return EXIT_OK


def cmd_join(args: argparse.Namespace) -> int:
    from ufme_ray.cluster import provision

    node = WorkerNode(**{f.name: getattr(args, f.name) for f in dataclasses.fields(WorkerNode)})
    provision.join(load_settings(args), gcs_address=args.gcs_address, node=node, report=say)
    return EXIT_OK


def cmd_leave(args: argparse.Namespace) -> int:
    from ufme_ray.cluster import provision

    provision.leave(temp_dir=args.temp_dir, report=say)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    given = args.folder or settings.demo_dir
    if not given:  # Path("") would be the working directory
        raise UsageError("no demo folder: pass --folder or set UFME_DEMO_DIR")
    folder = Path(given)
    if not folder.is_dir():
        raise UsageError(f"demo folder {folder} not found: pass --folder or set UFME_DEMO_DIR")
    subjects = sorted(p.name for p in folder.iterdir() if p.is_dir())
    enrolled = templates = 0
    skipped: list[dict] = []
    client = UfmeClient(args.url, find_api_key(settings), gallery=args.gallery)
    with client, tqdm(total=len(subjects), desc=f"demo gallery ({args.gallery or 'default'})", unit="subject") as bar:
        for start in range(0, len(subjects), args.chunk):
            chunk = subjects[start : start + args.chunk]
            report = client.demo_load(folder=str(folder.resolve()), subjects=chunk, images_per_subject=args.images_per_subject)
            enrolled += report["subjects_enrolled"]
            templates += report["templates_enrolled"]
            skipped += report["skipped"]
            bar.update(len(chunk))
        print(f"enrolled {enrolled} subjects ({templates} templates) from {folder}; {len(skipped)} photos skipped")
        probe = next((p for s in subjects for p in sorted((folder / s).iterdir())[args.images_per_subject:][:1]), None)
        if probe is not None:
            answer = client.identify(probe, top_k=3)
            decision = answer["faces"][0]["decision"] if answer["faces"] else "no face"
            print(f"identify {probe.parent.name}/{probe.name}: {decision}")
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser(
        "up", help="start (or use) a Ray cluster, deploy the service, wait until ready",
        description="Deploys serve_config.yaml with every setting the settings file (--config, else UFME_CONFIG), "
        "the UFME_* environment and these flags set laid over it, live ones (thresholds, gates, duplicates) "
        "into the Gateway's user_config too (docs/SETTINGS.md).",
    )
    up.add_argument("--address", help="dashboard URL of an existing cluster (default: start a local head)")
    up.add_argument("--serve-config", type=Path, help="Serve config (default: ./serve_config.yaml)")
    up.add_argument("--num-cpus", type=int, help="CPUs of the local head (default: all)")
    up.add_argument("--shards", type=int, help="number of gallery shards (default: the serve config's)")
    up.add_argument("--port", type=int, default=8000, help="HTTP port of the service")
    up.add_argument("--gcs-port", type=int, default=LocalHead.gcs_port, help="GCS port of the local head (one per local cluster)")
    up.add_argument("--dashboard-port", type=int, default=LocalHead.dashboard_port)
    up.add_argument("--metrics-port", type=int, default=LocalHead.metrics_port, help="Prometheus metrics port of the local node")
    up.add_argument(
        "--agent-port", type=int, default=LocalHead.agent_port, help="dashboard agent port of the local node (runs jobs)"
    )
    up.add_argument(
        "--shard-nodes", action="store_true",
        help="run the shard actors only on shard nodes (`ufme-ray join --shard-slots`), each taking one slot and no CPU",
    )
    up.add_argument(
        "--redis", metavar="HOST:PORT",
        help="GCS fault tolerance: the local head keeps the cluster's metadata in this Redis, so after a crash the same "
        "`up` takes the cluster back with its worker nodes and shard actors (password: --redis-password-file or "
        f"{REDIS_PASSWORD_ENV})",
    )
    up.add_argument("--redis-password-file", type=Path, help="file holding the Redis password")
    up.add_argument(
        "--redis-namespace", default=GcsRedis.namespace,
        help="the cluster's key namespace in Redis (one per cluster sharing it; the same on every restart)",
    )
    up.add_argument("--timeout-s", type=float, default=600)
    up.add_argument(
        "--temp-dir", type=Path, default=cluster_temp_dir(),
        help="Ray temp folder of the local head; one per local cluster (default: UFME_RAY_TEMP_DIR or /tmp/ufme-ray)",
    )
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="remove the service (and stop the local Ray started by `up`)")
    down.add_argument("--address", help="dashboard URL of an existing cluster (default: the local head)")
    down.add_argument("--dashboard-port", type=int, default=LocalHead.dashboard_port)
    down.add_argument("--temp-dir", type=Path, default=cluster_temp_dir(), help="Ray temp folder of the local head `up` started")
    down.set_defaults(handler=cmd_down)

    join = commands.add_parser(
        "join", help="start a worker node of this machine in a running cluster (shard slots, CPUs for replicas)",
        description="Needs the cluster's Ray token here (RAY_AUTH_TOKEN or ~/.ray/auth_token, copied from the head). "
        "Its raylet waits up to 600 s for a restarted head, as KubeRay's workers do with GCS fault tolerance.",
    )
    join.add_argument("gcs_address", metavar="HEAD:GCS_PORT", help="the head's GCS address (`up --gcs-port`)")
    join.add_argument("--shard-slots", type=int, default=WorkerNode.shard_slots, help="shard actors this node may hold")
    join.add_argument("--num-cpus", type=int, default=WorkerNode.num_cpus, help="CPUs for Serve replicas (default: none)")
    join.add_argument("--metrics-port", type=int, default=WorkerNode.metrics_port, help="Prometheus metrics port of this node")
    join.add_argument("--agent-port", type=int, default=WorkerNode.agent_port, help="dashboard agent port of this node")
    join.add_argument(
        "--temp-dir", type=Path, default=cluster_temp_dir(),
        help="Ray temp folder of this node, its own when a head or another node runs on this machine",
    )
    join.set_defaults(handler=cmd_join)

    leave = commands.add_parser("leave", help="stop this machine's worker node started by `join`")
    leave.add_argument("--temp-dir", type=Path, default=cluster_temp_dir(), help="Ray temp folder the node was started with")
    leave.set_defaults(handler=cmd_leave)

    demo = commands.add_parser("demo", help="load the demo gallery (progress bar) and run one identify")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--folder", help="<subject>/<image> photo folder (default: UFME_DEMO_DIR)")
    demo.add_argument("--images-per-subject", type=int, default=1)
    demo.add_argument("--chunk", type=int, default=10, help="subjects per request")
    demo.add_argument("--gallery", help="the gallery to load into (it must exist; default: default)")
    demo.set_defaults(handler=cmd_demo)
