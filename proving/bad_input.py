"""The bad-input proof: hostile requests and Schemathesis against a running service.

Passes when: no request got a 5xx, none hung (each has a client timeout), every refusal carried
the JSON error body, no hostile input was accepted where it must be refused, GET /ready is 200
afterwards and the gallery fingerprint (see `gallery_state`) is what it was before. Nothing the
proof sends may change the gallery, so "unchanged by anything rejected" is checked as "unchanged".
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import httpx
import numpy as np
from tqdm import tqdm

from proving.gallery_state import GalleryFingerprint, KnownSubjects, ensure_known_subjects, fingerprint
from proving.hostile import HostileCase, HostileCorpus
from proving.openapi_fuzz import FuzzSummary, run_schemathesis
from ufme_ray.config import ImageLimits

ROLES = ("admin", "enrol", "search")


@dataclass(frozen=True)
class Outcome:
    kind: str
    route: str
    name: str
    status: int | None  # None: no response (see error)
    error: str | None  # "timeout", a transport error, or a malformed error body
    latency_ms: float
    may_succeed: bool

    @property
    def hung(self) -> bool:
        return self.error == "timeout"


@dataclass
class BadInputReport:
    url: str
    seed: int
    concurrency: int
    timeout_s: float
    known: KnownSubjects
    outcomes: list[Outcome]
    fuzz: FuzzSummary | None
    before: GalleryFingerprint
    after: GalleryFingerprint
    ready_status: int | None
    hostile_s: float
    fuzz_s: float
    commands: list[str] = field(default_factory=list)

    @property
    def server_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is not None and o.status >= 500]

    @property
    def hung(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.hung]

    @property
    def transport_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is None and not o.hung]

    @property
    def malformed_errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is not None and o.error is not None]

    @property
    def wrongly_accepted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status is not None and o.status < 300 and not o.may_succeed]

    @property
    def total_requests(self) -> int:
        return len(self.outcomes) + (self.fuzz.requests if self.fuzz else 0)

    def problems(self) -> list[str]:
        """Why the proof fails; [] when it passes."""
        found = []
        fuzz_5xx = len(self.fuzz.server_errors) if self.fuzz else 0
        for label, items in (("5xx answers", self.server_errors), ("hung requests", self.hung),
                             ("requests without an answer", self.transport_errors),
                             ("errors without the JSON error body", self.malformed_errors),
                             ("hostile inputs accepted", self.wrongly_accepted)):
            if items:
                found.append(f"{len(items)} {label}: " + "; ".join(f"{o.name} -> {o.status or o.error}" for o in items[:5]))
        if fuzz_5xx:
            found.append(f"{fuzz_5xx} 5xx answers to schemathesis: {self.fuzz.server_errors[:3]}")
        if self.fuzz and self.fuzz.no_response:
            found.append(f"{self.fuzz.no_response} schemathesis requests without an answer")
        for role, code in (self.fuzz.exit_codes.items() if self.fuzz else ()):
            if code != 0:
                found.append(f"schemathesis ({role} pass) exited {code}: {self.fuzz.failed_output[role][-500:]}")
        if self.ready_status != 200:
            found.append(f"GET /ready answered {self.ready_status} after the run")
        found += [f"gallery changed: {line}" for line in self.before.differences(self.after)]
        return found

    def to_json(self) -> dict:
        by_kind: dict[str, Counter] = defaultdict(Counter)
        latency: dict[str, list[float]] = defaultdict(list)
        for o in self.outcomes:
            by_kind[o.kind][str(o.status) if o.status is not None else o.error] += 1
            latency[o.kind].append(o.latency_ms)
        return {
            "url": self.url,
            "seed": self.seed,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "elapsed_s": {"hostile": round(self.hostile_s, 1), "schemathesis": round(self.fuzz_s, 1)},
            "requests": {"hostile": len(self.outcomes), "schemathesis": self.fuzz.requests if self.fuzz else 0,
                         "total": self.total_requests},
            "hostile_by_kind": {k: dict(sorted(c.items())) for k, c in sorted(by_kind.items())},
            "hostile_latency_ms": {k: {"p50": round(float(np.percentile(v, 50)), 1), "max": round(max(v), 1)}
                                   for k, v in sorted(latency.items())},
            "schemathesis": self.fuzz.to_json() if self.fuzz else None,
            "server_errors": [o.__dict__ for o in self.server_errors],
            "hung": [o.__dict__ for o in self.hung],
            "transport_errors": [o.__dict__ for o in self.transport_errors],
            "malformed_errors": [o.__dict__ for o in self.malformed_errors],
            "wrongly_accepted": [o.__dict__ for o in self.wrongly_accepted],
            "gallery_before": self.before.to_json(),
            "gallery_after": self.after.to_json(),
            "known_subjects": self.known.subjects,
            "known_subjects_enrolled_by_this_run": self.known.enrolled,
            "ready_status_after": self.ready_status,
            "problems": self.problems(),
            "passed": not self.problems(),
            "commands": self.commands,
        }


def role_keys(admin_key: str, enrol_key: str | None = None, search_key: str | None = None) -> dict[str, str]:
    """Keys by role; a role without its own key uses the admin key (which may call everything)."""
    return {"admin": admin_key, "enrol": enrol_key or admin_key, "search": search_key or admin_key}


def _error_body_problem(response: httpx.Response) -> str | None:
    """Every 4xx/5xx must carry {"error": {"code", "message"}} (README); a description if it does not."""
    if response.status_code < 400:
        return None
    try:
        error = response.json()["error"]
        if isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]:
            return None
    except (ValueError, KeyError, TypeError):
        pass
    return f"malformed error body: {response.text[:120]!r}"


def build_request(client: httpx.Client, case: HostileCase, keys: dict[str, str], timeout_s: float) -> httpx.Request:
    request = dict(case.request)
    headers = {"authorization": f"Bearer {keys[case.role]}"} if case.role else {}
    headers.update(request.pop("headers", {}))
    url = client.base_url.copy_with(raw_path=case.path.encode("ascii"))
    return client.build_request(case.method, url, headers=headers, timeout=timeout_s, **request)


def send_case(client: httpx.Client, case: HostileCase, keys: dict[str, str], timeout_s: float) -> Outcome:
    request = build_request(client, case, keys, timeout_s)
    started = time.perf_counter()
    status, error = None, None
    try:
        response = client.send(request)
        status, error = response.status_code, _error_body_problem(response)
    except httpx.TimeoutException:
        error = "timeout"
    except httpx.TransportError as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    return Outcome(case.kind, case.route, case.name, status, error, (time.perf_counter() - started) * 1000, case.may_succeed)


def send_all(url: str, cases: Iterable[HostileCase], keys: dict[str, str], *, total: int, concurrency: int,
             timeout_s: float, progress: bool = True) -> list[Outcome]:
    """Send `cases` `concurrency` at a time, building each only when a slot is free (some are 13 MB)."""
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, limits=limits) as client, ThreadPoolExecutor(concurrency) as pool, \
            tqdm(total=total, desc="hostile requests", unit="req", disable=not progress) as bar:
        pending: set[Future] = set()

        def collect(done: set[Future]) -> None:
            for future in done:
                outcomes.append(future.result())
                bar.update()

        for case in cases:
            if len(pending) >= concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            pending.add(pool.submit(send_case, client, case, keys, timeout_s))
        collect(wait(pending)[0])
    return outcomes


def prove_bad_input(url: str, keys: dict[str, str], faces_dir: Path, *, requests: int, seed: int,
                    schemathesis_examples: int, concurrency: int = 4, timeout_s: float = 120,
                    limits: ImageLimits | None = None, progress: bool = True) -> BadInputReport:
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {keys['admin']}"}, timeout=timeout_s) as admin, \
            httpx.Client(base_url=url, headers={"authorization": f"Bearer {keys['enrol']}"}, timeout=timeout_s) as enroller:
        known = ensure_known_subjects(enroller, faces_dir)
        before = fingerprint(admin, enroller, known.subjects)
        corpus = HostileCorpus(faces_dir, seed=seed, known_subjects=known.subjects, limits=limits)
        started = time.perf_counter()
        outcomes = send_all(url, corpus.cases(requests), keys, total=requests, concurrency=concurrency,
                            timeout_s=timeout_s, progress=progress)
        hostile_s, started = time.perf_counter() - started, time.perf_counter()
        fuzz = None
        if schemathesis_examples > 0:
            fuzz = run_schemathesis(url, keys, max_examples=schemathesis_examples, seed=seed, timeout_s=timeout_s)
        fuzz_s = time.perf_counter() - started
        ready_status = httpx.get(f"{url.rstrip('/')}/ready", timeout=timeout_s).status_code
        after = fingerprint(admin, enroller, known.subjects)
    return BadInputReport(url, seed, concurrency, timeout_s, known, outcomes, fuzz, before, after, ready_status,
                          hostile_s, fuzz_s, commands=list(fuzz.commands.values()) if fuzz else [])


def format_tables(report: BadInputReport) -> str:
    """Markdown tables: hostile requests by kind x status (with latency), schemathesis by operation x status."""
    data = report.to_json()
    lines = []
    statuses = sorted({s for counts in data["hostile_by_kind"].values() for s in counts}, key=lambda s: (not s.isdigit(), s))
    lines.append("| kind | " + " | ".join(statuses) + " | total | p50 ms | max ms |")
    lines.append("|---|" + "---|" * (len(statuses) + 3))
    column_totals = Counter()
    for kind, counts in data["hostile_by_kind"].items():
        column_totals.update(counts)
        latency = data["hostile_latency_ms"][kind]
        cells = [str(counts.get(s, "")) for s in statuses]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {sum(counts.values())} | {latency['p50']} | {latency['max']} |")
    lines.append("| **all** | " + " | ".join(str(column_totals[s]) for s in statuses)
                 + f" | {sum(column_totals.values())} | | {max((o.latency_ms for o in report.outcomes), default=0):.1f} |")
    if report.fuzz is not None:
        fuzz = data["schemathesis"]
        fuzz_statuses = sorted({s for counts in fuzz["by_operation"].values() for s in counts})
        lines += ["", "| schemathesis operation | " + " | ".join(fuzz_statuses) + " | total |",
                  "|---|" + "---|" * (len(fuzz_statuses) + 1)]
        # The coverage phase tries every undocumented method on every path: one row for all of those 405s.
        undocumented = {op: c for op, c in fuzz["by_operation"].items() if set(c) == {"405"}}
        rows = {op: c for op, c in fuzz["by_operation"].items() if op not in undocumented}
        if undocumented:
            rows[f"undocumented method x path ({len(undocumented)} pairs)"] = {"405": sum(c["405"] for c in undocumented.values())}
        for operation, counts in rows.items():
            lines.append(f"| {operation} | " + " | ".join(str(counts.get(s, "")) for s in fuzz_statuses)
                         + f" | {sum(counts.values())} |")
        lines.append("| **all** | " + " | ".join(str(sum(c.get(s, 0) for c in fuzz["by_operation"].values())) for s in fuzz_statuses)
                     + f" | {fuzz['requests']} |")
    fuzz_5xx = len(report.fuzz.server_errors) if report.fuzz else 0
    changes = report.before.differences(report.after)
    lines += [
        "",
        "| check | result |",
        "|---|---|",
        f"| requests | {report.total_requests} ({len(report.outcomes)} hostile + {data['requests']['schemathesis']} schemathesis) |",
        f"| 5xx | {len(report.server_errors) + fuzz_5xx} |",
        f"| hung (no answer in {report.timeout_s:g} s) | {len(report.hung)} |",
        f"| no answer (transport error) | {len(report.transport_errors) + (report.fuzz.no_response if report.fuzz else 0)} |",
        f"| refusals without the JSON error body | {len(report.malformed_errors)} |",
        f"| hostile inputs accepted | {len(report.wrongly_accepted)} |",
        f"| max latency | {max((o.latency_ms for o in report.outcomes), default=0):.0f} ms hostile, "
        f"{report.fuzz.max_latency_ms if report.fuzz else 0:.0f} ms schemathesis |",
        f"| GET /ready after | {report.ready_status} |",
        f"| gallery (live templates, applied_seq per shard; {len(report.known.subjects)} known subjects' templates) | "
        + ("unchanged" if not changes else "CHANGED: " + "; ".join(changes)) + " |",
        f"| elapsed | {report.hostile_s:.0f} s hostile, {report.fuzz_s:.0f} s schemathesis |",
    ]
    return "\n".join(lines)


def write_json(report: BadInputReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n")
