"""`ufme-ray keys | audit`: API keys (in the keys file the service re-reads) and the audit trail."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ufme_ray.cli.common import EXIT_OK, UsageError, load_settings
from ufme_ray.client import KEYS_FILE, UfmeClient, find_api_key


def cmd_keys(args: argparse.Namespace) -> int:
    from ufme_ray.serving.auth import add_key_to_file

    settings = load_settings(args)
    keys_file = Path(settings.auth.keys_file or Path(settings.data_dir) / KEYS_FILE)
    try:
        key = add_key_to_file(keys_file, args.id, args.role)
    except ValueError as exc:  # the id exists already, or is not a valid id
        raise UsageError(str(exc)) from None
    print(f"created key {args.id!r} with role {args.role} in {keys_file} (the service re-reads it); the key, shown once:")
    print(key)
    return EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    with UfmeClient(args.url, find_api_key(settings)) as client:
        page = client.audit(since=args.since, until=args.until, operation=args.operation, subject_id=args.subject,
                            offset=args.offset, limit=args.limit)
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
