"""`ufme-ray import SOURCE --gallery G`: a photo collection into a gallery, as a Ray Job (jobs.imports)."""

from __future__ import annotations

import argparse
import hashlib
import shlex
import time
from pathlib import Path

from ufme_ray.cli.common import EXIT_FAILED, EXIT_OK, UsageError, load_settings, say

SUBMISSION_PREFIX = "ufme-import-"


def _source(value: str) -> str:
    """A local folder or manifest as an absolute path; s3:// URIs as given."""
    return value if "://" in value else str(Path(value).expanduser().resolve())


def _submission_id(client, import_id: str) -> str:
    """`ufme-import-<id>`, or `…-<n>` for a rerun (Ray keeps a job id for good; a rerun needs its own)."""
    taken = {job.submission_id for job in client.list_jobs()}
    wanted, attempt = SUBMISSION_PREFIX + import_id, 1
    while wanted in taken:
        attempt += 1
        wanted = f"{SUBMISSION_PREFIX}{import_id}-{attempt}"
    return wanted


def service_settings(dashboard, app_name: str):
    """The settings the running application's replicas have: its deployed `args` resolved as
    `build_app` resolves them, with the Gateway's live `user_config` laid over them, so the import
    applies the same models, storage, audit key, thresholds and gates as the service."""
    from ufme_ray.serve_config import AppArgs

    application = dashboard.applications().get("applications", {}).get(app_name)
    if application is None:
        raise UsageError(f"no Serve application {app_name!r} on the cluster: start the service first (ufme-ray up)")
    config = application["deployed_app_config"]
    settings = AppArgs.model_validate(config.get("args") or {}).resolve_settings()
    gateway = next((d for d in config.get("deployments", []) if d.get("name") == "Gateway"), {})
    live = settings.live_config().overlay(gateway.get("user_config"))
    return settings.model_copy(update={"thresholds": live.thresholds, "gates": live.gates, "duplicates": live.duplicates})


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ufme_ray import cluster
    from ufme_ray.client import UfmeApiError, UfmeClient, find_api_key
    from ufme_ray.jobs import submit
    from ufme_ray.jobs.import_source import ImportSourceError, list_source
    from ufme_ray.jobs.imports import SETTINGS_ENV
    from ufme_ray.orchestration.imports import check_import_id

    settings = load_settings(args)
    source = _source(args.source)
    try:
        photos = list_source(source)
    except ImportSourceError as exc:
        raise UsageError(str(exc)) from None
    import_id = args.import_id or f"{args.gallery}-{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    try:
        check_import_id(import_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    api = UfmeClient(args.url, find_api_key(settings))
    try:
        api.gallery_info(args.gallery)
    except UfmeApiError as exc:
        raise UsageError(f"gallery {args.gallery!r}: {exc.message}") from None
    token = cluster.ensure_auth_token()
    client = submit.connect(args.address, token)
    service = service_settings(cluster.DashboardClient(args.address, token), settings.imports.app_name)
    service = service.model_copy(update={"imports": settings.imports})
    command = ["python", "-m", "ufme_ray.jobs.imports", "--source", source, "--gallery", args.gallery,
               "--import-id", import_id, "--capture", args.capture, "--submitted-by", args.submitted_by]
    if args.quality_filter:
        command += ["--quality-filter", args.quality_filter]
    job_id = _submission_id(client, import_id)
    client.submit_job(
        entrypoint=shlex.join(command), submission_id=job_id, entrypoint_num_cpus=0,
        runtime_env={"env_vars": {SETTINGS_ENV: service.transport_json()}}, metadata={"ufme": "import", "import_id": import_id},
    )
    say(f"submitted import {import_id} ({len(photos)} photos into gallery {args.gallery!r}) as job {job_id} on {args.address}")
    if not args.wait:
        say(f"follow it with: ufme-ray import {args.source} --gallery {args.gallery} --import-id {import_id} --wait, "
            f"or GET /api/v1/imports/{import_id}")
        return EXIT_OK
    with tqdm(total=len(photos), desc=f"import {import_id}", unit="photo") as bar:
        while not (status := client.get_job_status(job_id)).is_terminal():
            try:
                state = api.import_state(import_id)
                bar.update(state["done"] - bar.n)
            except UfmeApiError:
                pass  # not written yet
            time.sleep(1.0)
    state = api.import_state(import_id)
    print(f"import {import_id}: job {status.value}, state {state['state']}, {state['done']} of {state['total']} photos")
    for outcome, count in sorted(state["counts"].items(), key=lambda item: -item[1]):
        print(f"  {outcome:<20}{count:>8}")
    print(f"report: {service.resolved_storage_uri}/{state['report']}" if state["report"] else f"error: {state['error']}")
    return EXIT_OK if status.value == "SUCCEEDED" and state["state"] == "done" else EXIT_FAILED


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import", help="import a photo collection into a gallery (a Ray Job; resumable, exactly once)",
        description="SOURCE: a folder or s3:// prefix of <subject_id>/<photo>, or a .csv/.parquet manifest with "
        "columns subject_id and uri. Rerunning with the same --import-id enrols what is missing and nothing twice.",
    )
    parser.add_argument("source")
    parser.add_argument("--gallery", required=True)
    parser.add_argument("--capture", choices=["live", "stored"], default="stored")
    parser.add_argument("--quality-filter", choices=["none", "low", "medium", "high", "auto"])
    parser.add_argument("--import-id", help="default: from the gallery and the source, so the same command resumes")
    parser.add_argument("--wait", action="store_true", help="follow the job with a progress bar and print the summary")
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="dashboard URL of the cluster")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service (gallery check, progress)")
    parser.add_argument("--submitted-by", default="cli", help="who the audit record names")
    parser.set_defaults(handler=cmd_import)
