"""Open-loop load: requests arrive at a fixed total rate whatever the answers take, so a slow service
shows up as latency, not as a lower rate (no coordinated omission: latency runs from the
scheduled arrival, and a wait for one of the `concurrency` connections counts in it).

A run: survey the photos (setup, see load_material), warm up at the full rate (onnxruntime and
allocators grow on the first requests), sample the memory of every Ray actor process, run the
measured window with a memory sample every `memory_every_s`, drain, sample again, erase the
subjects the load left, report. `scripts/load.py` is the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from proving.load_material import Material, Photo, collect_photos, survey
from proving.load_stats import SKIPPED, Result, endpoint_stats, endpoint_table, kind, memory_table, timeline, timeline_table
from proving.load_subjects import LoadSubjects
from proving.memory import max_growth, memory_growth, sample_memory
from proving.portable import portable

# Mostly searches, as a gate or a kiosk sends them; enrolments outpace deletes so the pool of
# identities stays full (see load_subjects); analyze and subject reads are the rarer calls.
DEFAULT_MIX = {"identify": 55, "verify": 15, "enrol": 10, "delete": 5, "analyze": 10, "get_subject": 5}
MEMORY_GROWTH_LIMIT = 0.05


@dataclass
class LoadConfig:
    url: str
    api_key: str
    dashboard_url: str
    ray_token: str | None
    rate: float
    duration_s: float
    warmup_s: float
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    concurrency: int = 64
    timeout_s: float = 60.0
    memory_every_s: float = 120.0
    timeline_s: float = 60.0
    seed: int = 0


class OpenLoopLoad:
    """Sends the mix on a fixed schedule and records one Result per arrival."""

    def __init__(self, config: LoadConfig, http: httpx.AsyncClient, material: Material, subjects: LoadSubjects):
        self.config = config
        self.http = http
        self.material = material
        self.subjects = subjects
        self.rng = random.Random(config.seed)  # photos and subjects: drawn as answers come
        self.schedule = random.Random(config.seed)  # operations: the same sequence for a seed, whatever the timing
        self.slots = asyncio.Semaphore(config.concurrency)
        self.results: list[Result] = []
        self.in_flight = 0
        self.completed = 0
        self.errors = 0
        self.operations = {
            "identify": self._identify, "analyze": self._analyze, "verify": self._verify,
            "get_subject": self._get_subject, "enrol": self._enrol, "delete": self._delete,
        }
        unknown = set(config.mix) - set(self.operations)
        if unknown:
            raise ValueError(f"unknown operations in the mix: {sorted(unknown)}")

    # --- operations: each returns the response, or None when nothing was sent ---------------

    async def _identify(self) -> httpx.Response:
        photo = self.rng.choice(self.material.probes)
        return await self.http.post("/api/v1/identify", files={"image": (photo.name, photo.data)})

    async def _analyze(self) -> httpx.Response:
        photo = self.rng.choice(self.material.probes)
        return await self.http.post("/api/v1/analyze", files={"image": (photo.name, photo.data)})

    async def _verify(self) -> httpx.Response:
        photo, subject_id = self.rng.choice(self.material.verify_pairs)
        return await self.http.post("/api/v1/verify", files={"image": (photo.name, photo.data)}, data={"subject_id": subject_id})

    async def _get_subject(self) -> httpx.Response:
        return await self.http.get(f"/api/v1/subjects/{self.rng.choice(self.material.gallery_subjects)}")

    async def _enrol(self) -> httpx.Response:
        subject_id, photo = self.subjects.next_enrolment()
        status = None
        try:
            response = await self.http.post(f"/api/v1/subjects/{subject_id}/faces", files={"image": (photo.name, photo.data)})
            status = response.status_code
            return response
        finally:
            self.subjects.enrol_answered(subject_id, photo, status)

    async def _delete(self) -> httpx.Response | None:
        subject_id = self.subjects.next_deletion()
        if subject_id is None:
            return None
        status = None
        try:
            response = await self.http.delete(f"/api/v1/subjects/{subject_id}")
            status = response.status_code
            return response
        finally:
            self.subjects.delete_answered(subject_id, status)

    # --- the schedule -------------------------------------------------------------------------

    async def _send(self, operation: str, scheduled: float, window_start: float, record: bool) -> None:
        self.in_flight += 1
        try:
            async with self.slots:
                try:
                    response = await self.operations[operation]()
                    outcome = SKIPPED if response is None else str(response.status_code)
                except httpx.TimeoutException:
                    outcome = "timeout"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
            result = Result(operation, scheduled - window_start, (time.monotonic() - scheduled) * 1000, outcome)
            self.completed += 1
            self.errors += kind(result) == "error"
            if record:
                self.results.append(result)
        finally:
            self.in_flight -= 1

    async def run(self, on_window_start, on_tick) -> None:
        """Warm-up then the measured window, one arrival every 1/rate s; waits for the last answer."""
        config = self.config
        operations, weights = zip(*config.mix.items())
        start = time.monotonic()
        window_start = start + config.warmup_s
        end = window_start + config.duration_s
        tasks: set[asyncio.Task] = set()
        window_started = False
        arrival = 0
        while (scheduled := start + arrival / config.rate) < end:
            if not window_started and scheduled >= window_start:
                window_started = True
                on_window_start()
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            operation = self.schedule.choices(operations, weights)[0]
            task = asyncio.create_task(self._send(operation, scheduled, window_start, record=scheduled >= window_start))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            on_tick(scheduled - start)
            arrival += 1
        if tasks:
            await asyncio.wait(tasks)


def _loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


async def _gallery_templates(http: httpx.AsyncClient) -> int:
    response = await http.get("/api/v1/gallery")
    response.raise_for_status()
    return response.json()["total_templates"]


async def run_load(config: LoadConfig, photos: list[Photo], *, progress: bool = True) -> dict:
    """The whole run; returns the JSON-ready report (verdict under "passed")."""
    headers = {"Authorization": f"Bearer {config.api_key}"}
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    async with httpx.AsyncClient(base_url=config.url, headers=headers, timeout=config.timeout_s, limits=limits) as http:
        templates_before = await _gallery_templates(http)
        material = await survey(http, photos)
        material.check()
        subjects = LoadSubjects(material.enrol_photos, uuid.uuid4().hex[:6], random.Random(config.seed))
        load = OpenLoopLoad(config, http, material, subjects)
        samples: list[dict] = []
        gallery_sizes: list[dict] = []
        window: dict = {}

        async def take_sample(label: str) -> None:
            at_s = time.monotonic() - window["start"]
            samples.append(await asyncio.to_thread(sample_memory, config.dashboard_url, config.ray_token, at_s=at_s, label=label))
            gallery_sizes.append({"at_s": round(at_s, 1), "templates": await _gallery_templates(http)})

        async def sample_from_window_start() -> None:
            await take_sample("start")
            while True:
                await asyncio.sleep(config.memory_every_s)
                await take_sample("during")

        def on_window_start() -> None:
            # A task, not an await: the schedule must not stall while the dashboard answers.
            window["start"] = time.monotonic()
            window["sampler"] = asyncio.create_task(sample_from_window_start())

        loadavg_start = _loadavg()
        total_s = config.warmup_s + config.duration_s
        with tqdm(total=round(total_s), desc=f"load {config.rate:g}/s", unit="s", disable=not progress) as bar:
            def on_tick(elapsed_s: float) -> None:
                if int(elapsed_s) > bar.n:
                    bar.update(int(elapsed_s) - bar.n)
                    bar.set_postfix(phase="warm-up" if elapsed_s < config.warmup_s else "measure",
                                    rate=f"{load.completed / max(elapsed_s, 1e-9):.1f}/s", in_flight=load.in_flight,
                                    errors=load.errors, refresh=False)

            await load.run(on_window_start, on_tick)
        sampler = window["sampler"]
        if sampler.done():
            sampler.result()  # the sampler failed: raise its error, the memory record is incomplete
        sampler.cancel()
        await take_sample("end")
        loadavg_end = _loadavg()
        leftovers = subjects.leftovers()
        for subject_id in leftovers:
            await http.delete(f"/api/v1/subjects/{subject_id}")  # 404 is fine: the enrol never stored it
        templates_after = await _gallery_templates(http)

    stats = endpoint_stats(load.results, config.duration_s)
    growth = memory_growth(samples[0], samples[-1])
    worst = max_growth(growth)
    return {
        "config": {k: v for k, v in asdict(config).items() if k not in ("api_key", "ray_token")},
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg_end,
        "photos": {"probes": len(material.probes), "verify_pairs": len(material.verify_pairs),
                   "gallery_subjects": len(material.gallery_subjects),
                   "enrol_identities": len(material.enrol_photos)},
        "endpoints": stats,
        "timeline": timeline(load.results, config.timeline_s),
        "gallery_templates": {"before": templates_before, "during": gallery_sizes, "after_cleanup": templates_after,
                              "subjects_erased_after": len(leftovers)},
        "memory": {
            "samples": samples,
            "growth": [{**asdict(row), "growth": row.growth} for row in growth],
            "max_growth": worst,
            "limit": MEMORY_GROWTH_LIMIT,
        },
        "passed": stats["all"]["errors"] == {} and worst is not None and worst < MEMORY_GROWTH_LIMIT,
    }


def print_report(report: dict) -> None:
    config = report["config"]
    samples = report["memory"]["samples"]
    growth = memory_growth(samples[0], samples[-1])
    print(f"\nopen-loop load: {config['rate']:g} req/s for {config['duration_s']:g} s after {config['warmup_s']:g} s warm-up; "
          f"load average start {report['loadavg_start']} end {report['loadavg_end']}")
    print(endpoint_table(report["endpoints"]))
    print(f"\nlatency over the run (every {config['timeline_s']:g} s):")
    print(timeline_table(report["timeline"]))
    print("\nresident memory of every Ray actor process (start = after warm-up):")
    print(memory_table(growth, report["memory"]["samples"]))
    gallery = report["gallery_templates"]
    worst = report["memory"]["max_growth"]
    print(f"\ngallery templates: before {gallery['before']}, during {[g['templates'] for g in gallery['during']]}, "
          f"after erasing the load's {gallery['subjects_erased_after']} leftover subjects {gallery['after_cleanup']}")
    print(f"error rate {report['endpoints']['all']['error_rate']:.4%}; max memory growth "
          f"{'n/a' if worst is None else f'{worst:+.2%}'} (limit {MEMORY_GROWTH_LIMIT:.0%}): "
          f"{'PASS' if report['passed'] else 'FAIL'}")


def parse_mix(text: str) -> dict[str, float]:
    """"identify=55,verify=15,..." -> weights."""
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip()] = float(weight)
    return mix


def main(argv: list[str] | None = None) -> int:
    from ufme_ray.client import find_api_key
    from ufme_ray.cluster import ensure_auth_token

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="an admin key (default: --api-key-file, UFME_API_KEY, <UFME_DATA_DIR>/admin.key)")
    parser.add_argument("--api-key-file", type=Path)
    parser.add_argument("--dashboard", default="http://127.0.0.1:8265", help="the cluster's dashboard, for the actor list")
    parser.add_argument("--ray-token", help="Ray auth token (default: RAY_AUTH_TOKEN or ~/.ray/auth_token)")
    parser.add_argument("--photos", type=Path, nargs="+", default=[Path("../shared/faces/lfw"), Path("../shared/faces/deepface")],
                        help="<identity>/<photo> folders: people in the gallery and people not in it")
    parser.add_argument("--rate", type=float, required=True, help="arrivals per second, all endpoints together")
    parser.add_argument("--duration-s", type=float, default=600)
    parser.add_argument("--warmup-s", type=float, default=60)
    parser.add_argument("--mix", type=parse_mix, default=DEFAULT_MIX, help="e.g. identify=55,verify=15,enrol=10,delete=5,analyze=10,get_subject=5")
    parser.add_argument("--concurrency", type=int, default=64, help="connections at most (requests beyond wait, and it counts)")
    parser.add_argument("--timeout-s", type=float, default=60)
    parser.add_argument("--memory-every-s", type=float, default=120)
    parser.add_argument("--timeline-s", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-results/load.json"))
    args = parser.parse_args(argv)

    api_key = args.api_key or (args.api_key_file.read_text().strip() if args.api_key_file else find_api_key())
    if not api_key:
        print("no API key: pass --api-key / --api-key-file or set UFME_DATA_DIR to the service's data folder", file=sys.stderr)
        return 2
    config = LoadConfig(
        url=args.url, api_key=api_key, dashboard_url=args.dashboard, ray_token=args.ray_token or ensure_auth_token(),
        rate=args.rate, duration_s=args.duration_s, warmup_s=args.warmup_s, mix=args.mix, concurrency=args.concurrency,
        timeout_s=args.timeout_s, memory_every_s=args.memory_every_s, timeline_s=args.timeline_s, seed=args.seed,
    )
    report = asyncio.run(run_load(config, collect_photos(args.photos)))
    report["command"] = " ".join([Path(sys.argv[0]).name] + [portable(a) for a in (sys.argv[1:] if argv is None else argv)])
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1
