"""The `ufme-ray` command. Subcommands parse into the settings models and call library functions."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.client import ADMIN_KEY_FILE, KEYS_FILE, UfmeApiError, UfmeClient, find_api_key
from ufme_ray.serving.auth import add_key_to_file, write_secret_file
from ufme_ray.serving.cluster import ClusterError, cluster_temp_dir
from ufme_ray.vision.errors import ImageError, VisionError

logger = logging.getLogger("ufme_ray")


def _settings(args: argparse.Namespace) -> UfmeSettings:
    overrides = {}
    if getattr(args, "model_dir", None):
        overrides["model_dir"] = args.model_dir
    return UfmeSettings.load(args.config, **overrides)


def _read(path: str, settings: UfmeSettings) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(settings.image.max_bytes + 1)


def cmd_analyze(args: argparse.Namespace) -> int:
    from ufme_ray.vision.pipeline import Pipeline

    settings = _settings(args)
    pipeline = Pipeline.from_settings(settings)
    status = 0
    for path in args.images:
        try:
            result = {"image": path, **pipeline.analyze(_read(path, settings)).to_dict(include_embedding=args.embeddings)}
        except (ImageError, OSError) as exc:
            result = {"image": path, "error": {"code": getattr(exc, "code", "unreadable"), "message": str(exc)}}
            status = 1
        result["thresholds"] = pipeline.thresholds.as_dict()
        print(json.dumps(result, indent=None if args.compact else 2))
    return status


def cmd_compare(args: argparse.Namespace) -> int:
    from ufme_ray.vision.pipeline import Pipeline

    settings = _settings(args)
    pipeline = Pipeline.from_settings(settings)
    try:
        comparison = pipeline.compare(_read(args.first, settings), _read(args.second, settings))
    except (ImageError, OSError) as exc:
        print(json.dumps({"error": {"code": getattr(exc, "code", "unreadable"), "message": str(exc)}}))
        return 1
    print(
        json.dumps(
            {
                "first": args.first,
                "second": args.second,
                "similarity": round(comparison.similarity, 4),
                "threshold": comparison.threshold,
                "match": comparison.match,
            },
            indent=2,
        )
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ufme_ray.vision import model_store
    from ufme_ray.vision.registry import ModelSpecs, manifest_for

    settings = _settings(args)
    manifest = manifest_for(settings)
    # Without names, verify/pull cover the models the settings select (plus, for verify, any other
    # file already present); --all covers the whole manifest.
    names = args.names or None
    if names is None and not getattr(args, "all", False):
        names = ModelSpecs.from_settings(settings).names
        if args.models_command == "verify":
            present = [s.name for s in manifest.models.values() if (Path(settings.model_dir) / s.file).exists()]
            names = list(dict.fromkeys(names + present))
    if args.models_command == "list":
        rows = model_store.list_models(manifest, settings.model_dir)
        print(f"model folder: {settings.model_dir}")
        print(f"{'name':<24}{'kind':<10}{'state':<14}{'licence / source'}")
        for row in rows:
            print(f"{row.name:<24}{row.kind:<10}{row.state:<14}{row.licence}\n{'':<48}{row.source}")
        return 0
    if args.models_command == "verify":
        statuses = model_store.verify_models(settings.model_dir, manifest, names)
        for status in statuses:
            detail = "" if status.ok else f"  expected {status.expected_sha256}, got {status.actual_sha256}"
            print(f"{status.state:<13}{status.name:<24}{status.path}{detail if status.state == 'corrupt' else ''}")
        return model_store.verify_exit_code(statuses)
    results = model_store.pull_models(
        settings.model_dir, manifest, names, source=args.source, progress=not args.quiet, force=args.force
    )
    for result in results:
        line = f"{result.outcome:<11}{result.name:<24}{result.path}"
        print(line if result.ok else f"{line}\n           {result.error}")
    return model_store.pull_exit_code(results)


def _serve_config_path(given: Path | None) -> Path:
    candidates = [given] if given else [Path("serve_config.yaml"), Path(__file__).resolve().parents[1] / "serve_config.yaml"]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    raise ConfigError(f"serve config not found (looked at {', '.join(map(str, candidates))}); pass --serve-config")


def cmd_up(args: argparse.Namespace) -> int:
    from ufme_ray.serving import cluster

    settings = _settings(args)
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides = {
        "model_dir": str(Path(settings.model_dir).resolve()),
        "data_dir": str(data_dir),
        "storage_uri": settings.resolved_storage_uri,
    }
    if settings.demo_dir is not None:
        overrides["demo_dir"] = str(settings.demo_dir.resolve())
    if args.shards is not None:
        overrides["gallery"] = {"num_shards": args.shards}
    keys_file = Path(settings.auth.keys_file or data_dir / KEYS_FILE).resolve()
    overrides["auth"] = {"keys_file": str(keys_file)}
    audit_key_file = data_dir / "audit-subject.key"
    if settings.audit.subject_key is None and settings.audit.subject_key_file is None:
        if not audit_key_file.exists():
            write_secret_file(audit_key_file, base64.b64encode(os.urandom(32)).decode())
        overrides["audit"] = {"subject_key_file": str(audit_key_file)}
    admin_key_file = data_dir / ADMIN_KEY_FILE
    if not admin_key_file.exists():
        key = add_key_to_file(keys_file, "admin", "admin")
        write_secret_file(admin_key_file, key)
        print(f"created the admin API key (shown once; stored for the CLI in {admin_key_file}, mode 0600):\n  {key}")
    config = cluster.render_serve_config(_serve_config_path(args.serve_config), overrides)
    config.setdefault("http_options", {})["port"] = args.port
    token = cluster.ensure_auth_token()
    address = args.address or f"http://127.0.0.1:{args.dashboard_port}"
    if args.address is None:
        print(f"starting a local Ray head (token auth on, metrics on port {args.metrics_port}) ...", flush=True)
        cluster.start_local_head(
            num_cpus=args.num_cpus,
            gcs_port=args.gcs_port,
            dashboard_port=args.dashboard_port,
            metrics_port=args.metrics_port,
            agent_port=args.agent_port,
            temp_dir=args.temp_dir,
        )
    client = cluster.DashboardClient(address, token)
    print(f"deploying the Serve application to {address} ...", flush=True)
    client.deploy(config)
    url = f"http://127.0.0.1:{args.port}"
    with tqdm(desc="waiting for /ready", unit="s", bar_format="{desc}: {elapsed} {postfix}") as bar:
        cluster.wait_until_ready(url, timeout_s=args.timeout_s, on_wait=lambda last: bar.set_postfix_str(last[:60]) or bar.update())
    print(f"UFME-Ray is ready at {url} (OpenAPI: {url}/docs)")
    print(f"data: {data_dir}   storage: {settings.resolved_storage_uri}")
    if args.address is None:
        print(f"metrics: http://127.0.0.1:{args.metrics_port}/metrics   dashboard: {address}")
    print("Ray token auth is on: run `export RAY_AUTH_MODE=token` before `serve status` or `ray job submit`.")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from ufme_ray.serving import cluster

    address = args.address or f"http://127.0.0.1:{args.dashboard_port}"
    client = cluster.DashboardClient(address, cluster.ensure_auth_token())
    if client.reachable():
        client.shutdown()
        print(f"removed the Serve applications from {address}")
    if args.address is None:
        stopped = cluster.stop_local_ray(args.temp_dir)
        print(f"stopped the local Ray cluster of {args.temp_dir} ({stopped} processes; the gallery stays in its storage)")
    else:
        print("the shard actors (detached) keep running on that cluster; the next deploy reuses them")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    folder = Path(args.folder or settings.demo_dir or "")
    if not folder.is_dir():
        raise ConfigError(f"demo folder {folder} not found: pass --folder or set UFME_DEMO_DIR")
    subjects = sorted(p.name for p in folder.iterdir() if p.is_dir())
    enrolled = templates = 0
    skipped: list[dict] = []
    with UfmeClient(args.url, find_api_key(settings)) as client, tqdm(total=len(subjects), desc="demo gallery", unit="subject") as bar:
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
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    settings = _settings(args)
    keys_file = Path(settings.auth.keys_file or Path(settings.data_dir) / KEYS_FILE)
    key = add_key_to_file(keys_file, args.id, args.role)
    print(f"created key {args.id!r} with role {args.role} in {keys_file} (the service re-reads it); the key, shown once:")
    print(key)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with UfmeClient(args.url, find_api_key(settings)) as client:
        page = client.audit(since=args.since, until=args.until, operation=args.operation, subject_id=args.subject,
                            offset=args.offset, limit=args.limit)
    for record in page["records"]:
        print(json.dumps(record))
    print(f"# {len(page['records'])} of {page['total']} records from offset {page['offset']}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np
    import yaml

    from ufme_ray.calibration import calibrate, labelled_embeddings
    from ufme_ray.vision.pipeline import Pipeline

    settings = _settings(args)
    pipeline = Pipeline.from_settings(settings)
    labels, vectors = [], []
    for folder in args.faces:
        found_labels, found_vectors, _ = labelled_embeddings(pipeline, folder)
        labels += [f"{folder.name}/{label}" for label in found_labels]
        vectors.append(found_vectors)
    source = f"{', '.join(str(f) for f in args.faces)} ({settings.models.detector} + {settings.models.embedder})"
    calibration, points = calibrate(labels, np.concatenate(vectors), sorted(args.far, reverse=True), source)
    print(f"{len(labels)} faces, {calibration.genuine_pairs} genuine and {calibration.impostor_pairs} impostor pairs")
    print(f"{'target FAR':>11}{'threshold':>11}{'TAR':>8}{'measured FAR':>14}")
    for point in points:
        print(f"{point.far:>11g}{point.threshold:>11.4f}{point.tar:>8.4f}{point.measured_far:>14.2e}")
    if min(args.far) < calibration.resolution:
        print(f"note: {calibration.impostor_pairs} impostor pairs cannot measure a FAR below {calibration.resolution:.1e}")
    if args.write_config is not None:
        strictest = points[-1]
        existing = yaml.safe_load(args.write_config.read_text()) if args.write_config.exists() else {}
        existing.setdefault("thresholds", {})["similarity_min"] = round(strictest.threshold, 4)
        args.write_config.write_text(yaml.safe_dump(existing, sort_keys=False))
        print(f"wrote thresholds.similarity_min = {strictest.threshold:.4f} (FAR {strictest.far:g}) to {args.write_config}")
    if args.write_calibration is not None:
        args.write_calibration.write_text(calibration.model_dump_json(indent=2))
        print(f"wrote the calibration to {args.write_calibration}")
    return 0


def _slot(value: str) -> str:
    from ufme_ray.jobs.submit import submission_id

    try:
        submission_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def cmd_compact(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from ufme_ray.jobs import submit
    from ufme_ray.jobs.compact import embedding_dim
    from ufme_ray.serving import cluster

    overrides = {"model_dir": args.model_dir} if args.model_dir else {}
    if args.shards is not None:
        overrides["gallery"] = {"num_shards": args.shards}
    settings = UfmeSettings.load(args.config, **overrides)
    client = submit.connect(args.address, cluster.ensure_auth_token())
    slot = args.slot or submit.slot_for(datetime.now(timezone.utc))
    job = submit.submit(client, settings, slot=slot, dim=embedding_dim(settings))
    verb = "submitted" if job.created else f"slot {slot} already has"
    print(f"{verb} compaction job {job.submission_id} ({job.status}) on {args.address}", flush=True)
    if not args.wait:
        return 0
    status = submit.follow(client, job.submission_id, lambda chunk: print(chunk, end="", flush=True))
    print(f"compaction job {job.submission_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ufme-ray", description="UFME-Ray face-matching engine")
    parser.add_argument("--config", type=Path, help="settings YAML (environment UFME_* overrides it)")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: UFME_MODEL_DIR or the pull cache)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    analyze = commands.add_parser("analyze", help="detect and score every face in images; prints JSON per image")
    analyze.add_argument("images", nargs="+")
    analyze.add_argument("--embeddings", action="store_true", help="include the embedding vectors")
    analyze.add_argument("--compact", action="store_true", help="one JSON line per image")
    analyze.set_defaults(handler=cmd_analyze)

    compare = commands.add_parser("compare", help="similarity of the main faces of two images and the decision")
    compare.add_argument("first")
    compare.add_argument("second")
    compare.set_defaults(handler=cmd_compare)

    models = commands.add_parser("models", help="list, verify or pull model files")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="every model in the manifest and whether it is installed")
    listing.set_defaults(names=[])
    verify = model_commands.add_parser("verify", help="check each file's sha256; exit 1 if corrupt, 2 if missing")
    verify.add_argument("names", nargs="*", help="only these models (default: the configured ones and any present)")
    verify.add_argument("--all", action="store_true", help="every model of the manifest")
    pull = model_commands.add_parser("pull", help="download, verify and install model files")
    pull.add_argument("names", nargs="*", help="only these models (default: the configured ones)")
    pull.add_argument("--all", action="store_true", help="every model of the manifest")
    pull.add_argument("--from", dest="source", help="mirror: http(s) base URL, folder, or s3://bucket/prefix?…")
    pull.add_argument("--force", action="store_true", help="download even if a verified file is present")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    for sub in (listing, verify, pull):
        sub.set_defaults(handler=cmd_models)
    up = commands.add_parser("up", help="start (or use) a Ray cluster, deploy the service, wait until ready")
    up.add_argument("--address", help="dashboard URL of an existing cluster (default: start a local head)")
    up.add_argument("--serve-config", type=Path, help="Serve config (default: ./serve_config.yaml)")
    up.add_argument("--num-cpus", type=int, help="CPUs of the local head (default: all)")
    up.add_argument("--shards", type=int, help="number of gallery shards (default: the serve config's)")
    up.add_argument("--port", type=int, default=8000, help="HTTP port of the service")
    up.add_argument("--gcs-port", type=int, default=6379, help="GCS port of the local head (one per local cluster)")
    up.add_argument("--dashboard-port", type=int, default=8265)
    up.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port of the local node")
    up.add_argument("--agent-port", type=int, default=52366, help="dashboard agent port of the local node (runs jobs)")
    up.add_argument("--timeout-s", type=float, default=600)
    up.add_argument(
        "--temp-dir", type=Path, default=cluster_temp_dir(),
        help="Ray temp folder of the local head; one per local cluster (default: UFME_RAY_TEMP_DIR or /tmp/ufme-ray)",
    )
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="remove the service (and stop the local Ray started by `up`)")
    down.add_argument("--address", help="dashboard URL of an existing cluster (default: the local head)")
    down.add_argument("--dashboard-port", type=int, default=8265)
    down.add_argument("--temp-dir", type=Path, default=cluster_temp_dir(), help="Ray temp folder of the local head `up` started")
    down.set_defaults(handler=cmd_down)

    demo = commands.add_parser("demo", help="load the demo gallery (progress bar) and run one identify")
    demo.add_argument("--url", default="http://127.0.0.1:8000")
    demo.add_argument("--folder", help="<subject>/<image> photo folder (default: UFME_DEMO_DIR)")
    demo.add_argument("--images-per-subject", type=int, default=1)
    demo.add_argument("--chunk", type=int, default=10, help="subjects per request")
    demo.set_defaults(handler=cmd_demo)

    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key (printed once) and store its hash")
    create.add_argument("--id", required=True, help="public key id (lower-case letters, digits, '-')")
    create.add_argument("--role", required=True, choices=["admin", "enrol", "search"])
    create.set_defaults(handler=cmd_keys)

    audit = commands.add_parser("audit", help="read the audit trail (admin key)")
    audit.add_argument("--url", default="http://127.0.0.1:8000")
    audit.add_argument("--since", type=float, help="unix time (s)")
    audit.add_argument("--until", type=float, help="unix time (s)")
    audit.add_argument("--operation")
    audit.add_argument("--subject")
    audit.add_argument("--offset", type=int, default=0)
    audit.add_argument("--limit", type=int, default=100)
    audit.set_defaults(handler=cmd_audit)

    calibrate = commands.add_parser("calibrate", help="similarity thresholds for target FARs from labelled photos")
    calibrate.add_argument("--faces", type=Path, nargs="+", required=True, help="folders of <identity>/<photo>")
    calibrate.add_argument("--far", type=float, nargs="+", default=[1e-3])
    calibrate.add_argument("--write-config", type=Path, help="set thresholds.similarity_min (strictest FAR) in this YAML")
    calibrate.add_argument("--write-calibration", type=Path, help="write the calibration JSON (for a model manifest)")
    calibrate.set_defaults(handler=cmd_calibrate)

    compact = commands.add_parser(
        "compact", help="submit the compaction Ray Job (one per schedule slot); --wait follows its log"
    )
    compact.add_argument("--address", default="http://127.0.0.1:8265", help="dashboard URL of the cluster")
    compact.add_argument("--wait", action="store_true", help="stream the job's log; exit 1 unless it succeeds")
    compact.add_argument(
        "--slot", type=_slot, help="schedule slot naming the job, ufme-compact-<slot> (default: the UTC hour)"
    )
    compact.add_argument("--shards", type=int, help="number of gallery shards (default: the settings')")
    compact.set_defaults(handler=cmd_compact)

    from ufme_ray.k8s.cli import add_k8s_parser

    add_k8s_parser(commands)  # ufme-ray k8s sync|render|apply|status|wait-ready|compact
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"ufme-ray: {exc}", file=sys.stderr)
        return 2
    except VisionError as exc:
        print(f"ufme-ray: {exc}", file=sys.stderr)
        return 2
    except (ClusterError, UfmeApiError) as exc:
        print(f"ufme-ray: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
