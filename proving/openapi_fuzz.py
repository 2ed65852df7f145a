"""Schemathesis against the service's /openapi.json, every request counted from its NDJSON events.

The `schemathesis run` command line (its documented interface) runs each pass; its NDJSON report
records every request it sent and every response it got, which is what is counted here.

Passes, each with the key of the role that may call its routes, so that the routes answer instead
of refusing with 403: search (identify, verify, analyze, probes), enrol (subjects), admin (gallery,
audit). POST /api/v1/demo/load is never fuzzed: a valid body there enrols a folder of photos, a
legitimate change of the gallery (the hostile corpus sends it invalid bodies instead). Nothing else
that Schemathesis can generate may change the gallery: an enrolment needs a real face, and a
delete needs an existing subject id.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

FUZZ_PASSES = (
    ("search", r"^/(api/v1/(identify|verify|analyze)|health|ready)$"),
    ("enrol", r"^/api/v1/subjects/"),
    ("admin", r"^/api/v1/(gallery|audit)$"),
)
_KEY_ENV = "UFME_FUZZ_API_KEY"
# The key reaches schemathesis through its environment and config file, never its command line.
_CONFIG = 'headers = { Authorization = "Bearer ${' + _KEY_ENV + '}" }\n'


@dataclass
class FuzzSummary:
    requests: int = 0
    by_operation: dict[str, Counter] = field(default_factory=dict)  # "POST /api/v1/identify" -> status counts
    server_errors: list[dict] = field(default_factory=list)  # each 5xx: method, url, status, body excerpt
    no_response: int = 0  # network errors and timeouts
    max_latency_ms: float = 0.0
    exit_codes: dict[str, int] = field(default_factory=dict)  # per pass; non-zero: a check failed or it erred
    failed_output: dict[str, str] = field(default_factory=dict)  # the end of a failed pass's output
    commands: dict[str, str] = field(default_factory=dict)  # per pass, as run (the key comes from the environment)

    def to_json(self) -> dict:
        return {
            "requests": self.requests,
            "by_operation": {op: dict(sorted(c.items())) for op, c in sorted(self.by_operation.items())},
            "server_errors": self.server_errors,
            "no_response": self.no_response,
            "max_latency_ms": round(self.max_latency_ms, 1),
            "exit_codes": self.exit_codes,
            "failed_output": self.failed_output,
            "commands": self.commands,
        }


def fuzz_command(url: str, path_regex: str, *, max_examples: int, seed: int, timeout_s: float, ndjson: Path) -> list[str]:
    return [
        sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml", "--no-color",
        "run", f"{url.rstrip('/')}/openapi.json", "--include-path-regex", path_regex,
        "--checks", "not_a_server_error", "--max-examples", str(max_examples), "--seed", str(seed),
        "--request-timeout", str(timeout_s), "--generation-database", "none", "--workers", "2",
        "--report", "ndjson", "--report-ndjson-path", str(ndjson),
    ]


def run_schemathesis(url: str, keys: dict[str, str], *, max_examples: int, seed: int, timeout_s: float = 60) -> FuzzSummary:
    """The passes run at the same time (each is a process that mostly waits for the service)."""
    summary = FuzzSummary()
    with tempfile.TemporaryDirectory(prefix="ufme-fuzz-") as work:
        running = []
        for role, path_regex in FUZZ_PASSES:
            folder = Path(work) / role
            folder.mkdir()
            (folder / "schemathesis.toml").write_text(_CONFIG)
            ndjson = folder / "events.ndjson"
            command = fuzz_command(url, path_regex, max_examples=max_examples, seed=seed, timeout_s=timeout_s, ndjson=ndjson)
            shown = ["python", *command[1:-1], "events.ndjson"]  # the report path is a temporary file
            summary.commands[role] = f"{_KEY_ENV}=<{role} key> {shlex.join(shown)}"
            with (folder / "output.txt").open("w") as output:  # a file, not a pipe: no pass waits on another's reader
                process = subprocess.Popen(command, cwd=folder, env={**os.environ, _KEY_ENV: keys[role]},
                                           stdout=output, stderr=subprocess.STDOUT)
            running.append((role, ndjson, process))
        for role, ndjson, process in running:
            process.wait()
            output = (ndjson.parent / "output.txt").read_text(errors="replace")
            if not ndjson.exists():
                raise RuntimeError(f"schemathesis ({role} pass) wrote no report:\n{output[-3000:]}")
            count_events(ndjson, summary)
            summary.exit_codes[role] = process.returncode
            if process.returncode != 0:
                summary.failed_output[role] = output[-4000:]
    return summary


def count_events(ndjson: Path, summary: FuzzSummary) -> None:
    """Add every request recorded in a schemathesis NDJSON report to `summary`."""
    with ndjson.open() as events:
        for line in events:
            event = json.loads(line)
            scenario = event.get("ScenarioFinished")
            if scenario is None:
                continue
            for interaction in scenario["recorder"].get("interactions", {}).values():
                request, response = interaction["request"], interaction["response"]
                operation = f"{request['method']} {route_template(urlsplit(request['uri']).path)}"
                summary.requests += 1
                status = str(response["status_code"]) if response else "no response"
                summary.by_operation.setdefault(operation, Counter())[status] += 1
                if response is None:
                    summary.no_response += 1
                    continue
                summary.max_latency_ms = max(summary.max_latency_ms, response["elapsed"] * 1000)
                if response["status_code"] >= 500:
                    summary.server_errors.append({
                        "method": request["method"], "url": request["uri"][:300], "status": response["status_code"],
                        "response": _response_text(response)[:300],
                    })


def route_template(path: str) -> str:
    """/api/v1/subjects/<anything>[/faces] -> /api/v1/subjects/{subject_id}[/faces]; other paths as they are."""
    prefix = "/api/v1/subjects/"
    if not path.startswith(prefix) or path == prefix:
        return path
    rest = path[len(prefix):]
    return prefix + "{subject_id}" + ("/faces" if rest.endswith("/faces") else "")


def _response_text(response: dict) -> str:
    content = response.get("content") or ""
    if isinstance(content, dict) and "$base64" in content:
        return base64.b64decode(content["$base64"]).decode("utf-8", "replace")
    return content if isinstance(content, str) else json.dumps(content)
