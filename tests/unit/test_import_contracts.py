"""The layering of docs/ARCHITECTURE.md holds: import-linter checks the contracts in pyproject.toml."""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    linted = subprocess.run(
        [Path(sys.executable).with_name("lint-imports"), "--no-cache"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert linted.returncode == 0, linted.stdout[-4000:] + linted.stderr[-2000:]
    assert "0 broken" in linted.stdout


def test_one_name_per_class():
    """No two public classes of the product share a name (an `Embedder` in two packages misleads)."""
    where = collections.defaultdict(list)
    for path in sorted((REPO_ROOT / "ufme_ray").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(REPO_ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
