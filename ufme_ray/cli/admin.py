"""`ufme-ray keys | audit`: API keys (in the keys file the service re-reads) and the audit trail."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from ufme_ray.cli.common import EXIT_OK, UsageError, load_settings
from ufme_ray.client import KEYS_FILE, UfmeClient, find_api_key
from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN


def _keys_file(args: argparse.Namespace) -> Path:
    settings = load_settings(args)
    return Path(settings.auth.keys_file or Path(settings.data_dir) / KEYS_FILE)


def _galleries(value: str) -> list[str] | None:
    """`--galleries staff,visitors` -> ["staff", "visitors"]; "*" -> None (every gallery)."""
    if value.strip() == "*":
        return None
    galleries = [part.strip() for part in value.split(",")]
    bad = [gallery for gallery in galleries if not re.fullmatch(SUBJECT_ID_PATTERN, gallery)]
    if bad:
        raise argparse.ArgumentTypeError(
            f"not gallery ids: {', '.join(map(repr, bad))} (a letter or digit, then up to 127 of A-Z a-z 0-9 . _ : @ -)"
        )
    return galleries


def cmd_keys(args: argparse.Namespace) -> int:
    from ufme_ray.serving.auth import add_key_to_file

    keys_file = _keys_file(args)
    try:
        key = add_key_to_file(
            keys_file, args.id, args.role, galleries=args.galleries, rate=args.rate, burst=args.burst,
            captures=None if args.captures is None else args.captures.split(","),
        )
    except ValueError as exc:  # the id exists already, or a field is not valid
        raise UsageError(str(exc)) from None
    print(f"created key {args.id!r} with role {args.role} in {keys_file} (the service re-reads it); the key, shown once:")
    print(key)
    return EXIT_OK


def cmd_keys_list(args: argparse.Namespace) -> int:
    """The keys file's keys: id, role, galleries, quota (never a digest). Inline keys (auth.keys) are
    the settings' and not listed."""
    from ufme_ray.orchestration.ratelimit import RateLimit
    from ufme_ray.serving.auth import read_keys_file

    keys_file = _keys_file(args)
    print(f"# keys in {keys_file}", file=sys.stderr)
    print(f"{'id':<32} {'role':<6} {'rate/s':>8} {'burst':>6}  {'captures':<12} galleries")
    for spec in read_keys_file(keys_file):
        limit = RateLimit.of(spec.rate, spec.burst)
        rate, burst = (f"{limit.rate:g}", str(limit.burst)) if limit is not None else ("-", "-")
        galleries = "*" if spec.galleries == "*" else ",".join(spec.galleries)
        captures = "*" if spec.captures == "*" else ",".join(spec.captures)
        print(f"{spec.id:<32} {spec.role:<6} {rate:>8} {burst:>6}  {captures:<12} {galleries}")
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    with UfmeClient(args.url, find_api_key(settings)) as client:
        page = client.audit(since=args.since, until=args.until, operation=args.operation, subject_id=args.subject,
                            gallery_id=args.gallery, offset=args.offset, limit=args.limit)
    for record in page["records"]:
        print(json.dumps(record))
    print(f"# {len(page['records'])} of {page['total']} records from offset {page['offset']}", file=sys.stderr)
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="manage API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key (printed once) and store its hash")
    create.add_argument("--id", required=True, help="public key id (lower-case letters, digits, '-')")
    create.add_argument("--role", required=True, choices=["admin", "enrol", "search"])
    create.add_argument("--galleries", type=_galleries, help="comma-separated gallery ids the key may use (default: *, all)")
    create.add_argument("--rate", type=float, help="requests per second the key may send, all replicas together (default: no quota)")
    create.add_argument("--burst", type=int, help="requests it may send at once (default: the rate rounded up)")
    create.add_argument("--captures", help="comma-separated capture types the key may declare: live, stored (default: both)")
    create.set_defaults(handler=cmd_keys)
    listing = key_commands.add_parser("list", help="list the keys file's keys: id, role, quota, galleries")
    listing.set_defaults(handler=cmd_keys_list)

    audit = commands.add_parser("audit", help="read the audit trail (admin key)")
    audit.add_argument("--url", default="http://127.0.0.1:8000")
    audit.add_argument("--since", type=float, help="unix time (s)")
    audit.add_argument("--until", type=float, help="unix time (s)")
    audit.add_argument("--operation")
    audit.add_argument("--subject")
    audit.add_argument("--gallery", help="only requests that acted in this gallery")
    audit.add_argument("--offset", type=int, default=0)
    audit.add_argument("--limit", type=int, default=100)
    audit.set_defaults(handler=cmd_audit)
