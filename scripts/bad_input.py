"""The bad-input proof against a running service: hostile requests + Schemathesis, zero 5xx allowed.

Run a service (`ufme-ray up`, then `ufme-ray demo` for a gallery), then, with its data folder's
admin key (or --api-key / UFME_API_KEY):
    python scripts/bad_input.py --url http://127.0.0.1:8000 --requests 5000 --schemathesis-examples 100
Optional --enrol-key-file / --search-key-file give the passes that need those roles their own keys
(without them the admin key is used for every role). Prints the tables (markdown), writes JSON
(--json), exits 1 on any 5xx, hung request, accepted hostile input, gallery change or unready service.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# `proving` is not installed (it stays out of the product wheel): import it from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proving.bad_input import format_tables, prove_bad_input, role_keys, write_json
from ufme_ray.client import find_api_key

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FACES = Path(os.environ.get("UFME_SHARED_DIR", REPO_ROOT.parent / "shared")) / "faces"


def _key(path: str | None) -> str | None:
    return Path(path).read_text().strip() if path else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="admin key (default: --api-key-file, UFME_API_KEY, <data_dir>/admin.key)")
    parser.add_argument("--api-key-file")
    parser.add_argument("--enrol-key-file", help="a key with role enrol (default: the admin key)")
    parser.add_argument("--search-key-file", help="a key with role search (default: the admin key)")
    parser.add_argument("--requests", type=int, default=5000, help="hostile requests (schemathesis adds its own)")
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--schemathesis-examples", type=int, default=100, help="max examples per operation; 0 skips it")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout-s", type=float, default=120, help="a request without an answer by then counts as hung")
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES, help="../shared/faces")
    parser.add_argument("--json", type=Path, default=REPO_ROOT / "bench-results" / "bad_input.json")
    args = parser.parse_args(argv)

    admin_key = args.api_key or _key(args.api_key_file) or find_api_key()
    if not admin_key:
        parser.error("no admin key: pass --api-key or --api-key-file, or set UFME_API_KEY")
    keys = role_keys(admin_key, _key(args.enrol_key_file), _key(args.search_key_file))
    report = prove_bad_input(
        args.url, keys, args.faces, requests=args.requests, seed=args.seed,
        schemathesis_examples=args.schemathesis_examples, concurrency=args.concurrency, timeout_s=args.timeout_s,
    )
    given = argv if argv is not None else sys.argv[1:]
    shown = ["<key>" if i and given[i - 1] == "--api-key" else arg for i, arg in enumerate(given)]
    report.commands.insert(0, "python scripts/bad_input.py " + " ".join(shown))
    print(format_tables(report))
    write_json(report, args.json)
    print(f"\nwrote {args.json}")
    problems = report.problems()
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
