"""`ufme-ray compact`: the compaction Ray Job, submitted and followed by
`ufme_ray.jobs.submit.run_compaction`; also the slot options `ufme-ray k8s compact` shares."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone

from ufme_ray.cli.common import EXIT_ALREADY_RAN, EXIT_FAILED, EXIT_OK, EXIT_USAGE, load_settings, say

EPILOG = (
    f"exit codes: {EXIT_OK} submitted (with --wait: the job succeeded); {EXIT_FAILED} the job did not succeed, "
    f"or the cluster refused or could not be reached; {EXIT_USAGE} wrong arguments or settings; "
    f"{EXIT_ALREADY_RAN} the slot's job had already ended, so nothing new was compacted (--now runs a new one)"
)


def _slot(value: str) -> str:
    from ufme_ray.jobs.submit import submission_id

    try:
        submission_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_slot_options(parser: argparse.ArgumentParser) -> None:
    """--slot / --now: which slot names the job (one job per slot; default: the UTC hour)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--slot", type=_slot, help="schedule slot naming the job, ufme-compact-<slot> (default: the UTC hour)")
    group.add_argument(
        "--now", action="store_true",
        help="compact now even if this hour's job already ran: a slot of its own (the UTC second)",
    )


def slot_of(args: argparse.Namespace) -> str:
    from ufme_ray.jobs import submit

    now = datetime.now(timezone.utc)
    if args.now:
        return submit.instant_slot(now)
    return args.slot or submit.slot_for(now)


def write_log(chunk: str) -> None:
    print(chunk, end="", flush=True)


def cmd_compact(args: argparse.Namespace) -> int:
    from ufme_ray import cluster
    from ufme_ray.jobs import submit

    settings = load_settings(args, **({"gallery": {"num_shards": args.shards}} if args.shards is not None else {}))
    slot = slot_of(args)

    def submitted(job: submit.Submission) -> None:
        verb = "submitted" if job.created else f"slot {slot} already has"
        say(f"{verb} compaction job {job.submission_id} ({job.status}) on {args.address}")

    job = submit.run_compaction(
        args.address, cluster.ensure_auth_token(), settings, slot=slot, wait=args.wait, write=write_log, on_submitted=submitted
    )
    if not args.wait:
        return EXIT_OK
    print(f"compaction job {job.submission_id}: {job.status}")
    return EXIT_OK if job.status == "SUCCEEDED" else EXIT_FAILED


def add_parsers(commands: argparse._SubParsersAction) -> None:
    compact = commands.add_parser(
        "compact", help="submit the compaction Ray Job (one per schedule slot); --wait follows its log",
        epilog=EPILOG,
    )
    compact.add_argument("--address", default="http://127.0.0.1:8265", help="dashboard URL of the cluster")
    compact.add_argument("--wait", action="store_true", help="stream the job's log; exit 1 unless it succeeds")
    add_slot_options(compact)
    compact.add_argument("--shards", type=int, help="number of gallery shards (default: the settings')")
    compact.set_defaults(handler=cmd_compact)
