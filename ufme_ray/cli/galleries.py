"""`ufme-ray galleries create | list | show | delete`: the galleries of a running service (admin key)."""

from __future__ import annotations

import argparse
import json

from ufme_ray.cli.common import EXIT_OK, UsageError, load_settings
from ufme_ray.client import UfmeClient, find_api_key


def _client(args: argparse.Namespace) -> UfmeClient:
    return UfmeClient(args.url, find_api_key(load_settings(args)))


def cmd_create(args: argparse.Namespace) -> int:
    try:
        policy = json.loads(args.policy) if args.policy else None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--policy is not JSON: {exc}") from None
    with _client(args) as client:
        print(json.dumps(client.create_gallery(args.gallery_id, args.description, policy), indent=1))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        offset = 0
        while True:
            page = client.galleries(offset=offset, limit=1000)
            for gallery in page["galleries"]:
                print(f"{gallery['gallery_id']}\t{gallery['description']}")
            offset += len(page["galleries"])
            if not page["galleries"] or offset >= page["total"]:
                return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(json.dumps(client.gallery_info(args.gallery_id), indent=1))
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        erased = client.delete_gallery(args.gallery_id)
    print(f"deleted gallery {erased['gallery_id']!r}: {erased['templates_erased']} templates erased "
          "(gone from storage after the next compaction and retention)")
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction) -> None:
    galleries = commands.add_parser("galleries", help="create, list, show and delete galleries (admin key)")
    actions = galleries.add_subparsers(dest="galleries_command", required=True)
    for name, handler, text in (
        ("create", cmd_create, "create a gallery"),
        ("list", cmd_list, "list the galleries"),
        ("show", cmd_show, "a gallery's counts and the policy in force"),
        ("delete", cmd_delete, "erase every subject of a gallery and the gallery"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--url", default="http://127.0.0.1:8000")
        if name != "list":
            action.add_argument("gallery_id")
        if name == "create":
            action.add_argument("--description", default="")
            action.add_argument("--policy", help='JSON, e.g. \'{"thresholds": {"similarity_min": 0.5}}\'')
        action.set_defaults(handler=handler)
