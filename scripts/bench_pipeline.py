"""Identify throughput and latency over HTTP vs the same models chained in one process.

Run a service first (`ufme-ray up`, then `ufme-ray demo` to give identify a gallery), then, with
the same UFME_DATA_DIR (the admin key is read from there, or from UFME_API_KEY):
    python scripts/bench_pipeline.py --url http://127.0.0.1:8000 [--photos ../shared/faces/lfw] [--requests 200]
Prints a table and writes JSON (--out). The limit is the in-process chain of the models the service
runs (GET /api/v1/stages says which; a --precision chain that ran them, else one of its own), on
the same photos while the service is idle, first and again after the HTTP runs; the ratios
(throughput, and p50 latency) are against the better of the two. --providers sets the in-process chain's onnxruntime execution
providers (runtime.providers; the service has its own settings) and the JSON records what its
sessions got; --in-process-only needs no service:
    python scripts/bench_pipeline.py --in-process-only --providers CUDAExecutionProvider CPUExecutionProvider
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from tqdm import tqdm

from ufme_ray import execution_providers
from ufme_ray.client import find_api_key
from ufme_ray.config import UfmeSettings
from ufme_ray.vision.pipeline import Pipeline
from ufme_ray.vision.registry import PRECISION_MIXES, precision_mix


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def in_process(
    photos: list[bytes], repeats: int, providers: list[str] | None, precision: str, models: dict | None = None
) -> dict:
    """The chain at `precision` (a `precision_mix`), or of the detector and embedder `models` names
    (`precision` is then only a label)."""
    mix = precision_mix("fp32" if models else precision, UfmeSettings.load())
    runtime = {**mix["runtime"], **({"providers": providers} if providers else {})}
    settings = UfmeSettings.load(runtime=runtime, models={**mix["models"], **(models or {})})
    pipeline = Pipeline.from_settings(settings)
    pipeline.analyze(photos[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    for data in tqdm(photos * repeats, desc=f"in-process {precision}", unit="img"):
        t = time.perf_counter()
        pipeline.analyze(data)
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - started
    return {
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "intra_op_threads": settings.runtime.intra_op_threads or "onnxruntime default (all cores)",
        "spin_threads": settings.runtime.spin_threads,
        "precision": precision,
        "models": {"detector": pipeline.detector.spec.name, "embedder": pipeline.embedder.spec.name},
        "providers": pipeline.providers,
    }


def served_models(url: str) -> dict | None:
    """The detector and embedder the service runs (GET /api/v1/stages, an admin key); None if it will not say."""
    response = httpx.get(f"{url}/api/v1/stages", headers={"Authorization": f"Bearer {find_api_key()}"}, timeout=30)
    if response.status_code != 200:
        print(f"GET /api/v1/stages answered {response.status_code}: the limit runs the first --precision's models",
              file=sys.stderr)
        return None
    stages = {s["stage"]: list(s["models"]) for s in response.json()["stages"]}
    return {"detector": stages["detector"][0], "embedder": stages["embedder"][0]}


def over_http(url: str, photos: list[bytes], concurrency: int, requests: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {find_api_key()}"}
    with httpx.Client(base_url=url, timeout=120, headers=headers, limits=httpx.Limits(max_connections=concurrency)) as http:
        http.post("/api/v1/identify", files={"image": ("warm.jpg", photos[0])})

        def one(i: int) -> None:
            t = time.perf_counter()
            response = http.post("/api/v1/identify", files={"image": ("probe.jpg", photos[i % len(photos)])})
            latencies.append((time.perf_counter() - t) * 1000)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool, tqdm(total=requests, desc=f"HTTP c={concurrency}", unit="req") as bar:
            for _ in pool.map(one, range(requests)):
                bar.update()
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": requests,
        "images_per_s": requests / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "statuses": statuses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--photos", type=Path, default=Path("../shared/faces/lfw"))
    parser.add_argument("--count", type=int, default=60, help="distinct photos used")
    parser.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_pipeline.json"))
    parser.add_argument(
        "--providers", nargs="+", choices=execution_providers.KNOWN, metavar="PROVIDER",
        help="execution providers of the in-process chain, most preferred first (default: the settings')",
    )
    parser.add_argument("--in-process-only", action="store_true", help="only the in-process chain: no service needed")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISION_MIXES, default=["fp32"],
        help="in-process chains to time side by side (int8: variants made by `ufme-ray models quantize`; "
        "int8-embedder: the embedder's alone, the detector fp32); the first is the reference of the ratios",
    )
    args = parser.parse_args(argv)

    photos = [p.read_bytes() for p in sorted(args.photos.glob("*/*.jpg"))[: args.count]]
    if not photos:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 2
    if not args.in_process_only and httpx.get(f"{args.url}/ready", timeout=10).status_code != 200:
        print(f"the service at {args.url} is not ready", file=sys.stderr)
        return 2
    repeats = max(1, args.requests // len(photos))
    levels = [] if args.in_process_only else args.concurrency
    chains = [in_process(photos, repeats, args.providers, precision) for precision in args.precision]
    # The limit is the chain of the models the service runs (an int8 embedder named in its settings,
    # say), timed here if no --precision chain ran them.
    served = served_models(args.url) if levels else None
    reference = chains[0] if served is None else next((c for c in chains if c["models"] == served), None)
    if reference is None:
        reference = in_process(photos, repeats, args.providers, "as served", served)
        chains.append(reference)
    report = {"photos": len(photos), "in_process": reference, "in_process_by_precision": chains, "served": served}
    report["http"] = [over_http(args.url, photos, c, args.requests) for c in levels]
    references = [reference]
    if levels:
        # The limit again after the service's runs: one run of it moves by several ms on a shared
        # machine, and the ratios take the better of the two (the stricter target).
        report["in_process_after"] = in_process(photos, repeats, args.providers, reference["precision"],
                                                reference["models"])
        references.append(report["in_process_after"])
    limit = max(r["images_per_s"] for r in references)
    fastest_p50 = min(r["p50_ms"] for r in references)
    report["reference"] = {"images_per_s": limit, "p50_ms": fastest_p50}
    print(f"\n{'mode':<28}{'images/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'images/s ×':>12}{'p50 ×':>8}")

    def row(name: str, result: dict) -> None:
        result["ratio_to_in_process"] = result["images_per_s"] / limit
        result["p50_ratio_to_in_process"] = result["p50_ms"] / fastest_p50
        statuses = f"   {result['statuses']}" if "statuses" in result else ""
        print(f"{name:<28}{result['images_per_s']:>10.1f}{result['p50_ms']:>10.1f}{result['p99_ms']:>10.1f}"
              f"{result['ratio_to_in_process']:>12.2f}{result['p50_ratio_to_in_process']:>8.2f}{statuses}")

    for chain in chains:
        row(f"in-process {chain['precision']}", chain)
    if levels:
        row(f"in-process {reference['precision']} again", report["in_process_after"])
    for result in report["http"]:
        row(f"HTTP c={result['concurrency']}", result)
    report["load_average"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the end: {report['load_average']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
