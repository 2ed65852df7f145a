"""The floor under issue 14's request-path targets: what Ray Serve alone costs for an identify's shape.

The service answers an identify with five hops: HTTP into the Gateway, the Detector, the three face
stages side by side (Quality, Liveness, Embedder), and the two shard actors. This benchmark builds
the same shape with no work in it, on a fresh local cluster started as `ufme-ray up` starts one
(`cluster.start_local_head`: token auth, Serve's throughput mode and gRPC transport, the ingress
given), and with the same payloads: the uploaded JPEG, the decoded frame to the Detector, the face
crops to the stages, one 128-float query to each shard. The routes add one hop at a time:

  /upload            HTTP in, the multipart upload read, a JSON answer
  /detect            + the Detector (a @serve.batch method, like ours)
  /detect-unbatched  the same with a plain method instead (what @serve.batch costs)
  /stages            /detect + Quality, Liveness and Embedder concurrently (the Embedder batched)
  /identify          + both shard actors concurrently (plain Ray actor calls)

For each route: p50 at concurrency 1, images/s at --concurrency, and the machine's CPU per request
at that concurrency (all cores' busy time, less this process's, which is the client). Compare the
/identify row with the in-process chain (`bench_pipeline.in_process`, timed here before and after
the floor runs): at concurrency 1 the service cannot beat chain p50 + this p50; on 2 cores it
cannot beat 2000 / (model CPU ms + this CPU ms) images/s.

    python scripts/bench_serve_floor.py [--ingress serve-proxy haproxy] [--requests 300]

HAProxy needs its binary (`pip install -e '.[haproxy]'`); without it that run stops with the hint.

Each ingress runs in a child process with a cluster of its own, one after the other; nothing else
should run (write the load average beside the figures). JSON: --out.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
# No `from __future__ import annotations`: the routes travel to the replica pickled by value, where
# FastAPI could not resolve UploadFile from a string.
from fastapi import FastAPI, UploadFile

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # proving/, beside scripts/
from proving.local_head import bare_head  # noqa: E402
from proving.servers import free_ports  # noqa: E402

from bench_pipeline import in_process, percentile  # noqa: E402  (scripts/, this file's folder)
ROUTES = ("upload", "detect", "detect-unbatched", "stages", "identify")
SHARDS = 2


def build_app():
    """The identify's shape with no work: every stage answers what ours would, at once."""
    import ray
    from ray import serve

    api = FastAPI()
    frame = np.zeros((250, 250, 3), np.uint8)  # an LFW photo, decoded
    face = {"box": np.zeros(4, np.float32), "landmarks": np.zeros((5, 2), np.float32), "score": 0.9}

    @serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.3})
    class Detector:
        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
        async def detect(self, images: list[np.ndarray], score_mins: list[float]) -> list[list[dict]]:
            return [[face] for _ in images]

    @serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.3})
    class UnbatchedDetector:  # what @serve.batch costs a lone request
        async def detect(self, image: np.ndarray, score_min: float) -> list[dict]:
            return [face]

    @serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.1})
    class Scorer:
        async def score(self, crops: list) -> np.ndarray:
            return np.full(len(crops), 0.9, np.float32)

    @serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.2})
    class Embedder:
        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
        async def embed(self, crop_lists: list[list[np.ndarray]]) -> list[np.ndarray]:
            return [np.zeros((len(crops), 128), np.float32) for crops in crop_lists]

    @ray.remote(num_cpus=0.1, max_concurrency=4)
    class Shard:
        def search_subjects(self, queries: np.ndarray, top_k: int, galleries: list[str]) -> list[list[tuple]]:
            return [[("subject", 0.5)] for _ in queries]

    @serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.2})
    @serve.ingress(api)
    class Gateway:
        def __init__(self, detector, unbatched_detector, quality, liveness, embedder):
            self._detector, self._unbatched_detector = detector, unbatched_detector
            self._quality, self._liveness, self._embedder = quality, liveness, embedder
            self._shards = [Shard.options(name=f"floor-shard-{i}", get_if_exists=True).remote() for i in range(SHARDS)]

        async def _read(self, image: UploadFile) -> int:
            return len(await image.read())

        async def _detect(self) -> list[dict]:
            return await self._detector.detect.remote(frame, 0.6)

        async def _stages(self) -> np.ndarray:
            crop112, crop80, crop96 = (np.zeros((s, s, 3), np.uint8) for s in (112, 80, 96))
            _, _, vectors = await asyncio.gather(
                self._quality.score.remote([crop96]), self._liveness.score.remote([[crop80, crop80]]),
                self._embedder.embed.remote([crop112]),
            )
            return vectors

        @api.post("/upload")
        async def upload(self, image: UploadFile) -> dict:
            return {"bytes": await self._read(image)}

        @api.post("/detect")
        async def detect(self, image: UploadFile) -> dict:
            await self._read(image)
            return {"faces": len(await self._detect())}

        @api.post("/detect-unbatched")
        async def detect_unbatched(self, image: UploadFile) -> dict:
            await self._read(image)
            return {"faces": len(await self._unbatched_detector.detect.remote(frame, 0.6))}

        @api.post("/stages")
        async def stages(self, image: UploadFile) -> dict:
            await self._read(image)
            await self._detect()
            return {"dim": int((await self._stages()).shape[1])}

        @api.post("/identify")
        async def identify(self, image: UploadFile) -> dict:
            await self._read(image)
            await self._detect()
            queries = await self._stages()
            found = await asyncio.gather(*(shard.search_subjects.remote(queries, 5, ["default"]) for shard in self._shards))
            return {"status": "match", "candidates": sum(len(hits[0]) for hits in found)}

    return Gateway.bind(Detector.bind(), UnbatchedDetector.bind(), Scorer.bind(), Scorer.bind(), Embedder.bind())


def measure(url: str, route: str, photo: bytes, concurrency: int, requests: int) -> dict:
    import httpx
    import psutil
    from tqdm import tqdm

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    me = psutil.Process()
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=concurrency)) as http:
        for _ in range(20):  # warm: connections, the replicas' first calls
            http.post(f"/{route}", files={"image": ("warm.jpg", photo)}).raise_for_status()

        def one(_: int) -> None:
            started = time.perf_counter()
            response = http.post(f"/{route}", files={"image": ("probe.jpg", photo)})
            latencies.append((time.perf_counter() - started) * 1000)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        busy_before, mine_before = _busy_s(psutil.cpu_times()), sum(me.cpu_times()[:4])
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool, tqdm(total=requests, desc=f"/{route} c={concurrency}", unit="req") as bar:
            for _ in pool.map(one, range(requests)):
                bar.update()
        elapsed = time.perf_counter() - started
        service_cpu_s = (_busy_s(psutil.cpu_times()) - busy_before) - (sum(me.cpu_times()[:4]) - mine_before)
    if statuses != {200: requests}:  # a floor from failed requests would be no floor
        raise RuntimeError(f"/{route} at c={concurrency} answered {statuses}, not {requests} times 200")
    return {
        "route": route, "concurrency": concurrency, "requests": requests, "per_s": requests / elapsed,
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "service_cpu_ms_per_request": 1000 * service_cpu_s / requests, "statuses": statuses,
    }


def _busy_s(times) -> float:
    return times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)


def child_env(ingress: str) -> dict[str, str]:
    """The child's environment: Ray's auth mode, and the nodes' Serve transport, which Ray reads when
    it is imported. The app is built in the child (`serve.run`), and its handles keep the transport
    of the process that built them: without it the Gateway would call the stages as Ray actor tasks,
    not over gRPC as the service's Gateway does (`ufme-ray up` builds the app on the cluster)."""
    from ufme_ray import serve_transport
    from ufme_ray.config import ImageLimits

    return {**os.environ, "RAY_AUTH_MODE": "token", **serve_transport.node_env(ImageLimits(), ingress)}


def run_one(ingress: str, photo_path: Path, requests: int, concurrency: int) -> dict:
    """Starts a cluster for `ingress`, measures every route at 1 and `concurrency`, stops it."""
    import ray
    from ray import serve

    with bare_head(ingress=ingress, prefix="ufme-floor-") as head:
        ray.init(address=head.address, namespace="ufme-floor", log_to_driver=False)
        try:
            (http_port,) = free_ports(1)
            serve.start(http_options={"host": "127.0.0.1", "port": http_port})
            serve.run(build_app(), name="floor", route_prefix="/")
            url, photo = f"http://127.0.0.1:{http_port}", photo_path.read_bytes()
            rows = [measure(url, route, photo, c, requests) for route in ROUTES for c in (1, concurrency)]
            serve.shutdown()
        finally:
            ray.shutdown()
    return {"ingress": ingress, "photo_bytes": len(photo), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ingress", nargs="+", default=["serve-proxy", "haproxy"], choices=["serve-proxy", "haproxy"])
    parser.add_argument("--requests", type=int, default=300, help="requests per route and concurrency")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--photo", type=Path, default=REPO_ROOT.parent / "shared/faces/lfw/Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
        help="the JPEG every request uploads",
    )
    parser.add_argument(
        "--chain-photos", type=Path, default=REPO_ROOT.parent / "shared/faces/lfw",
        help="photos of the in-process chain timed before and after the floor runs (the first 60, twice)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench-results/bench_serve_floor.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one ingress, in a process of its own
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_one(args.child, args.photo, args.requests, args.concurrency)))
        return 0

    load_before = os.getloadavg()
    # The limit the floor is set against, timed in this run: the host's speed moves from run to run.
    photos = [p.read_bytes() for p in sorted(args.chain_photos.glob("*/*.jpg"))[:60]]
    chains = [in_process(photos, 2, None, "fp32")]
    results = []
    for ingress in args.ingress:
        command = [sys.executable, __file__, "--child", ingress, "--requests", str(args.requests),
                   "--concurrency", str(args.concurrency), "--photo", str(args.photo)]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=child_env(ingress))
        if done.returncode != 0:
            print(f"{ingress}: the run failed (exit {done.returncode})", file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    chains.append(in_process(photos, 2, None, "fp32"))
    load_after = os.getloadavg()
    chain_p50 = min(chain["p50_ms"] for chain in chains)  # the faster of the two: the stricter bound

    print(f"\nload average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'ingress':<12} {'route':<18} {'c=1 p50 ms':>10} {'c=1 CPU ms':>10} "
          f"{f'c={args.concurrency} req/s':>11} {f'c={args.concurrency} CPU ms':>11}")
    for result in results:
        rows = {(row["route"], row["concurrency"]): row for row in result["rows"]}
        for route in ROUTES:
            one, many = rows[route, 1], rows[route, args.concurrency]
            print(f"{result['ingress']:<12} /{route:<17} {one['p50_ms']:>10.2f} {one['service_cpu_ms_per_request']:>10.2f} "
                  f"{many['per_s']:>11.1f} {many['service_cpu_ms_per_request']:>11.2f}")
    print(f"\nthe in-process chain: p50 {chains[0]['p50_ms']:.1f} ms before, {chains[1]['p50_ms']:.1f} ms after; "
          "against the faster, an identify at c=1 cannot take less than:")
    for result in results:
        floor_ms = next(r["p50_ms"] for r in result["rows"] if r["route"] == "identify" and r["concurrency"] == 1)
        print(f"  {result['ingress']}: {chain_p50 + floor_ms:.1f} ms, {1 + floor_ms / chain_p50:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(
        {"load_before": load_before, "load_after": load_after, "chains": chains, "results": results}, indent=2
    ))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
