"""Where an identify's time goes: each step in one process, the same step as a Serve call, and HTTP.

Run a service first (`ufme-ray up`, then `ufme-ray demo` for a gallery to search), then, on the
same machine and with the same UFME_DATA_DIR (the admin key is read from there, or UFME_API_KEY):
    python scripts/profile_request_path.py [--url http://127.0.0.1:8000] [--address 127.0.0.1:6379]
Photo by photo, one request at a time (concurrency 1), it times
  1. each step of the chain in this process (decode, detect, crops, quality, liveness, embed);
  2. the same steps as calls on the stage deployments' handles from a driver on the cluster (what
     the Gateway does, with the same inputs), the four face stages also concurrently as the Gateway
     sends them, and the search over the shard actors (the Gateway calls them itself);
  3. one audit record, as the Gateway writes it before answering (group commit, then a
     write-once object; here on a file:// store in a temporary folder);
  4. POST /api/v1/analyze (no search) and POST /api/v1/identify over HTTP;
  5. the CPU each process on this machine spends per identify, at concurrency 1 and at
     --cpu-concurrency (each actor by its class, each stage's replicas by deployment, Ray's own
     processes by program, from the cluster's temp folder and its dashboard).
Prints p50 per step side by side, then the CPU table, and writes JSON (--out). Quiet machine only:
record the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from ufme_ray import serve_transport  # light: imports no Ray
from ufme_ray.config import ImageLimits, UfmeSettings

# A driver joins the cluster `ufme-ray up` started, which has Ray token authentication on, and calls
# the stages over the transport the Gateway uses; Ray reads both when it is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# Not the throughput mode's router in the caller's loop: this driver calls from more than one loop.
os.environ.setdefault("RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP", "1")
for name, value in serve_transport.node_env(ImageLimits()).items():
    os.environ.setdefault(name, value)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ufme_ray import cluster  # noqa: E402
from ufme_ray.audit import AuditRecord, AuditWriter  # noqa: E402
from ufme_ray.client import find_api_key  # noqa: E402
from ufme_ray.gallery.storage import open_storage  # noqa: E402
from ufme_ray.serving.shard_calls import ShardDirectory  # noqa: E402
from ufme_ray.vision.pipeline import Pipeline, stage_crops  # noqa: E402
from ufme_ray.vision.registry import ModelSpecs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # proving/, beside scripts/
from proving.ray_processes import alive_actors  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import over_http as identify_load  # noqa: E402


def p50(values: list[float]) -> float:
    return float(np.percentile(values, 50)) if values else float("nan")


class Clock:
    def __init__(self) -> None:
        self.ms: defaultdict[str, list[float]] = defaultdict(list)

    def time(self, name: str, function, *args):
        started = time.perf_counter()
        result = function(*args)
        self.ms[name].append((time.perf_counter() - started) * 1000)
        return result

    async def time_async(self, name: str, awaitable):
        started = time.perf_counter()
        result = await awaitable
        self.ms[name].append((time.perf_counter() - started) * 1000)
        return result


def in_process(pipeline: Pipeline, specs: ModelSpecs, photos: list[bytes], clock: Clock) -> list[tuple]:
    """Step by step; returns (bgr, faces, crops, embeddings) per photo for the Serve calls."""
    inputs = []
    for data in tqdm(photos, desc="in process", unit="img"):
        started = time.perf_counter()
        image = clock.time("decode", pipeline.decode, data)
        faces = clock.time("detect", pipeline.detector.detect, image.bgr)
        if not faces:
            continue
        crops = clock.time("crops", stage_crops, specs, image.bgr, faces)
        clock.time("quality", pipeline.quality.run, crops["quality"])
        clock.time("liveness", pipeline.liveness.run, crops["liveness"])
        embeddings = clock.time("embed", pipeline.embedder.run, crops["embedder"])
        clock.ms["chain (no search)"].append((time.perf_counter() - started) * 1000)
        inputs.append((image.bgr, faces, crops, embeddings))
    return inputs


async def through_serve(app: str, inputs: list[tuple], score_min: float, num_shards: int, clock: Clock) -> None:
    handle = {name: serve.get_deployment_handle(name, app_name=app)
              for name in ("Detector", "Quality", "Liveness", "Morph", "Embedder")}
    shards = ShardDirectory(num_shards)
    for bgr, _, crops, embeddings in tqdm(inputs, desc="serve handles", unit="img"):
        await clock.time_async("detect", handle["Detector"].detect.remote(bgr, score_min))
        await clock.time_async("quality", handle["Quality"].score.remote(crops["quality"]))
        await clock.time_async("liveness", handle["Liveness"].score.remote(crops["liveness"]))
        await clock.time_async("morph (none configured)", handle["Morph"].score.remote([]))
        await clock.time_async("embed", handle["Embedder"].embed.remote(crops["embedder"]))
        await clock.time_async("face stages concurrently", asyncio.gather(
            handle["Quality"].score.remote(crops["quality"]), handle["Liveness"].score.remote(crops["liveness"]),
            handle["Morph"].score.remote([]), handle["Embedder"].embed.remote(crops["embedder"]),
        ))
        await clock.time_async("search", shards.search(np.asarray(embeddings), 5, ["default"]))


async def audit_records(count: int, clock: Clock) -> None:
    with tempfile.TemporaryDirectory(prefix="ufme-profile-audit-") as folder:
        writer = AuditWriter(open_storage(Path(folder).as_uri()))
        for _ in range(count):
            record = AuditRecord(time=time.time(), request_id="profile", key_id="profile", operation="identify", outcome="200")
            await clock.time_async("audit record (file://)", writer.record(record))


def over_http(url: str, key: str, photos: list[bytes], clock: Clock) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        for data in tqdm(photos, desc="http", unit="img"):
            files = {"image": ("probe.jpg", data, "image/jpeg")}
            for name, path in (("HTTP analyze", "/api/v1/analyze"), ("HTTP identify", "/api/v1/identify")):
                started = time.perf_counter()
                response = http.post(path, files=files, data={"capture": "stored"})
                clock.ms[name].append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{path} answered {response.status_code}: {response.text[:300]}")


def _program(arguments: list[str]) -> str:
    """What a process runs: `python -c`, else its first argument that is neither an option nor the
    Python interpreter (a script's or a binary's file name)."""
    if "-c" in arguments:
        return "python -c"
    script = next((a for a in arguments if not a.startswith("-") and "python" not in Path(a).name), arguments[0])
    return Path(script).name


def process_roles(temp_dir: Path, dashboard_url: str, token: str) -> dict[int, str]:
    """pid -> role of every process of the cluster whose Ray temp folder is `temp_dir`: an actor by
    its class (a Serve replica by its deployment), any other of the cluster's processes (GCS,
    raylet, dashboard, agents, idle workers) by its program."""
    roles = {}
    for process in cluster.cluster_processes(temp_dir):
        program = _program(process.cmdline() or [process.name()])
        # The dashboard runs each of its modules as a process of its own.
        roles[process.pid] = "Ray: dashboard modules" if program.startswith("ray-dashboard-") else f"Ray: {program}"
    for actor in alive_actors(dashboard_url, token):
        if actor.class_name.startswith("ServeReplica:"):
            roles[actor.pid] = f"{actor.class_name.rsplit(':', 1)[-1]} replica"
        else:
            roles[actor.pid] = actor.class_name
    return roles


def cpu_seconds() -> dict[int, float]:
    """pid -> user + system CPU seconds of every process on this machine."""
    seconds = {}
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


def cpu_per_identify(url: str, photos: list[bytes], concurrency: int, requests: int, roles: dict[int, str]) -> dict:
    """CPU ms per identify of each role, from every process's CPU time before and after `requests`
    identifies at `concurrency`; what is not the cluster's (this script included) is "everything
    else", and a process that starts meanwhile counts from zero."""
    before = cpu_seconds()
    result = identify_load(url, photos, concurrency, requests)
    if set(result["statuses"]) != {200}:
        raise SystemExit(f"identify answered {result['statuses']}")
    by_role: defaultdict[str, float] = defaultdict(float)
    for pid, seconds in cpu_seconds().items():
        by_role[roles.get(pid, "everything else")] += (seconds - before.get(pid, 0.0)) * 1000 / requests
    return {"concurrency": concurrency, "images_per_s": result["images_per_s"],
            "cpu_ms_per_identify": dict(sorted(by_role.items(), key=lambda item: -item[1]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--address", default="127.0.0.1:6379", help="the cluster's GCS address (a driver joins it)")
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265", help="the cluster's dashboard (its actors)")
    parser.add_argument("--temp-dir", type=Path, default=cluster.cluster_temp_dir(), help="the cluster's Ray temp folder")
    parser.add_argument("--app", default="ufme")
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "faces" / "lfw")
    parser.add_argument("--count", type=int, default=60, help="photos (the first of each person)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-concurrency", type=int, default=16, help="the second CPU-per-identify run's clients")
    parser.add_argument("--out", type=Path, default=Path("bench-results/profile_request_path.json"))
    args = parser.parse_args(argv)

    people = sorted(p for p in args.photos.iterdir() if p.is_dir())
    photos = [sorted(p.glob("*.jpg"))[0].read_bytes() for p in people][: args.count] * args.repeats
    settings = UfmeSettings.load()
    specs = ModelSpecs.from_settings(settings)
    pipeline = Pipeline.from_settings(settings)
    pipeline.analyze(photos[0])  # warm-up
    load_before = os.getloadavg()

    local = Clock()
    inputs = in_process(pipeline, specs, photos, local)
    token = cluster.ensure_auth_token()
    ray.init(address=args.address, log_to_driver=False)
    served, shards = Clock(), settings.gallery.num_shards
    asyncio.run(through_serve(args.app, inputs[:1], pipeline.thresholds.detection_min, shards, Clock()))  # warm-up
    asyncio.run(through_serve(args.app, inputs, pipeline.thresholds.detection_min, shards, served))
    ray.shutdown()
    asyncio.run(audit_records(len(inputs), served))
    http = Clock()
    over_http(args.url, os.environ.get("UFME_API_KEY") or find_api_key(), photos[:1], Clock())  # warm-up
    over_http(args.url, os.environ.get("UFME_API_KEY") or find_api_key(), photos, http)
    roles = process_roles(args.temp_dir, args.dashboard, token)
    cpu = [cpu_per_identify(args.url, photos, c, len(photos), roles) for c in (1, args.cpu_concurrency)]
    load_after = os.getloadavg()

    steps = ["decode", "detect", "crops", "quality", "liveness", "morph (none configured)", "embed",
             "face stages concurrently", "chain (no search)", "search", "audit record (file://)", "HTTP analyze",
             "HTTP identify"]
    rows = [{"step": s, "in_process_p50_ms": p50(local.ms.get(s, [])), "serve_p50_ms": p50(served.ms.get(s, [])),
             "http_p50_ms": p50(http.ms.get(s, []))} for s in steps]
    print(f"\n{len(photos)} photos, concurrency 1; load average before {load_before}, after {load_after}\n")
    print(f"{'step':<28}{'in process':>12}{'Serve call':>12}{'HTTP':>10}   (p50 ms)")
    for row in rows:
        cells = [row["in_process_p50_ms"], row["serve_p50_ms"], row["http_p50_ms"]]
        print(f"{row['step']:<28}" + "".join(f"{'-' if np.isnan(c) else f'{c:.1f}':>{w}}" for c, w in zip(cells, (12, 12, 10))))
    columns = "".join(f"{'c=' + str(run['concurrency']):>8}" for run in cpu)
    print(f"\n{'CPU ms per identify, by process (all of this machine)':<52}" + columns)
    for role in [r for r, ms in cpu[-1]["cpu_ms_per_identify"].items() if ms >= 0.05]:  # the JSON has all
        print(f"{role:<52}" + "".join(f"{run['cpu_ms_per_identify'].get(role, 0.0):>8.1f}" for run in cpu))
    print(f"{'total':<52}" + "".join(f"{sum(run['cpu_ms_per_identify'].values()):>8.1f}" for run in cpu))
    print(f"{'images/s':<52}" + "".join(f"{run['images_per_s']:>8.1f}" for run in cpu))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"photos": len(photos), "load_average": {"before": load_before, "after": load_after},
                                    "rows": rows, "cpu": cpu}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
