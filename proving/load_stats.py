"""What a load run measured: outcome of every request, per-endpoint latency, errors, memory tables.

A refusal that is the right answer to a real photo (409 duplicate_face, 422 from an enrolment or
verify gate) is an expected answer, counted apart from errors. Errors are everything else that
is not the success status: 5xx, unexpected 4xx, timeouts, connection errors.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from proving.memory import ProcessGrowth

SUCCESS_STATUS = {"enrol": "201"}  # every other operation: 200
EXPECTED_REFUSALS = {"enrol": {"409", "422"}, "verify": {"422"}}
SKIPPED = "skipped"  # a delete when the load holds no subject: nothing sent


@dataclass(frozen=True)
class Result:
    operation: str
    at_s: float  # scheduled arrival, seconds from the start of the measured window
    latency_ms: float  # scheduled arrival -> answer, so a wait for a free connection counts too
    outcome: str  # HTTP status ("200", "409", "503"), "timeout", an exception name, or SKIPPED


def kind(result: Result) -> str:
    """ok, expected, error or skipped."""
    if result.outcome == SKIPPED:
        return SKIPPED
    if result.outcome == SUCCESS_STATUS.get(result.operation, "200"):
        return "ok"
    if result.outcome in EXPECTED_REFUSALS.get(result.operation, set()):
        return "expected"
    return "error"


def _percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "p99_ms": round(float(p99), 1),
            "max_ms": round(max(latencies), 1)}


def endpoint_stats(results: list[Result], duration_s: float) -> dict[str, dict]:
    """Per operation, and "all": requests sent, outcomes by kind, achieved rate, latency of every sent request."""
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.operation, []).append(result)
    groups["all"] = results
    stats = {}
    for operation, rows in groups.items():
        sent = [r for r in rows if kind(r) != SKIPPED]
        by_kind = {k: Counter(r.outcome for r in sent if kind(r) == k) for k in ("ok", "expected", "error")}
        stats[operation] = {
            "requests": len(sent),
            "ok": sum(by_kind["ok"].values()),
            "expected": dict(sorted(by_kind["expected"].items())),
            "errors": dict(sorted(by_kind["error"].items())),
            "error_rate": sum(by_kind["error"].values()) / len(sent) if sent else 0.0,
            "skipped": len(rows) - len(sent),
            "rate_per_s": round(len(sent) / duration_s, 3),
            **_percentiles([r.latency_ms for r in sent]),
        }
    return stats


def timeline(results: list[Result], bucket_s: float) -> list[dict]:
    """Every request by arrival time bucket: is latency flat over the run?"""
    buckets: dict[int, list[Result]] = {}
    for result in results:
        if kind(result) != SKIPPED:
            buckets.setdefault(int(result.at_s // bucket_s), []).append(result)
    return [
        {"from_s": index * bucket_s, "requests": len(rows), "errors": sum(kind(r) == "error" for r in rows),
         **_percentiles([r.latency_ms for r in rows])}
        for index, rows in sorted(buckets.items())
    ]


def _counts(counts: dict) -> str:
    return " ".join(f"{k}:{v}" for k, v in counts.items()) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def endpoint_table(stats: dict[str, dict]) -> str:
    lines = ["| endpoint | requests | rate/s | ok | expected 4xx | errors | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for operation in sorted(stats, key=lambda op: (op == "all", op)):
        s = stats[operation]
        skipped = f" (+{s['skipped']} skipped)" if s["skipped"] else ""
        lines.append(
            f"| {operation} | {s['requests']}{skipped} | {s['rate_per_s']:.2f} | {s['ok']} | {_counts(s['expected'])} | "
            f"{_counts(s['errors'])} | {_ms(s['p50_ms'])} | {_ms(s['p95_ms'])} | {_ms(s['p99_ms'])} | {_ms(s['max_ms'])} |"
        )
    return "\n".join(lines)


def timeline_table(rows: list[dict]) -> str:
    lines = ["| from s | requests | errors | p50 ms | p95 ms | p99 ms | max ms |", "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {r['from_s']:.0f} | {r['requests']} | {r['errors']} | {_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | "
        f"{_ms(r['p99_ms'])} | {_ms(r['max_ms'])} |"
        for r in rows
    ]
    return "\n".join(lines)


def memory_table(rows: list[ProcessGrowth], samples: list[dict]) -> str:
    """Start, each sample in between, end (MiB) and growth per process."""
    mib = 2 ** 20
    middle = samples[1:-1]
    header = ["actor", "pid", "start MiB"] + [f"{s['at_s']:.0f} s" for s in middle] + ["end MiB", "growth"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    for row in rows:
        between = []
        for sample in middle:
            found = next((p for p in sample["processes"] if p["pid"] == row.pid and p["name"] == row.name), None)
            between.append("-" if found is None else f"{found['rss_bytes'] / mib:.0f}")
        start = "only at end" if row.start_bytes is None else f"{row.start_bytes / mib:.1f}"
        end = "only at start" if row.end_bytes is None else f"{row.end_bytes / mib:.1f}"
        growth = "not compared" if row.growth is None else f"{row.growth:+.1%}"
        name = row.name if len(row.name) <= 40 else row.name[:39] + "…"  # the proxy's name ends in a node id
        lines.append(f"| {name} | {row.pid} | {start} | " + " | ".join(between + [end, growth]) + " |")
    return "\n".join(lines)
