"""Bulk import against the in-process chain, side by side, and its memory as the source grows.

Needs the service running (`ufme-ray up`). For each size in --sizes, a source folder of that many
photos (../shared/faces/lfw, repeated under new subject ids as needed) is imported into a fresh
gallery (capture stored, duplicate policy allow) with `ufme-ray import --wait`; the same photos'
first --chain-photos are run through the in-process chain (`vision.Pipeline.analyze`, one process,
one photo at a time) just before. Printed and written as JSON: images/s of each and their ratio
(end to end for the import: submit to done, shard writes included), and the peak RSS of the import's
driver and of its scoring actors (sampled every 0.5 s).

    ufme-ray up && python scripts/bench_import.py --sizes 400 2000 --out bench-results/import.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
from tqdm import tqdm

from ufme_ray.client import UfmeClient, find_api_key
from ufme_ray.config import UfmeSettings

REPO = Path(__file__).resolve().parents[1]


def make_source(lfw: Path, size: int, root: Path) -> Path:
    photos = sorted(p for p in lfw.rglob("*.jpg"))
    for i in range(size):
        photo = photos[i % len(photos)]
        folder = root / f"r{i // len(photos)}-{photo.parent.name.lower().replace('_', '-')}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.name)
    return root


class PeakRss:
    """Peak RSS of the import's driver and of its scoring actors, sampled until stopped."""

    def __init__(self) -> None:
        self.driver = self.actors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            driver = actors = 0
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                rss = process.info["memory_info"].rss if process.info["memory_info"] else 0
                if "ufme_ray.jobs.imports" in cmdline:
                    driver += rss
                elif "EnrolPhotos" in cmdline:
                    actors += rss
            self.driver, self.actors = max(self.driver, driver), max(self.actors, actors)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def chain_rate(source: Path, count: int) -> float:
    from ufme_ray.vision.pipeline import Pipeline

    pipeline = Pipeline.from_settings(UfmeSettings.load())
    photos = sorted(p for p in source.rglob("*.jpg"))[:count]
    started = time.perf_counter()
    for photo in tqdm(photos, desc="in-process chain", unit="img"):
        pipeline.analyze(photo.read_bytes())
    return len(photos) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 2000])
    parser.add_argument("--chain-photos", type=int, default=400)
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "faces" / "lfw")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--address", default="http://127.0.0.1:8265")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    client = UfmeClient(args.url, find_api_key())
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-import-") as folder:
            source = make_source(args.lfw, size, Path(folder))
            load = os.getloadavg()
            chain = chain_rate(source, min(size, args.chain_photos))
            gallery = f"bench-import-{uuid.uuid4().hex[:8]}"
            client.create_gallery(gallery, "scripts/bench_import.py", {"duplicates": {"action": "allow"}, "gates": {"capture": "stored"}})
            import_id = f"bench-{gallery}"
            with PeakRss() as peak:
                started = time.perf_counter()
                code = subprocess.call([
                    sys.executable, "-m", "ufme_ray.cli", "import", str(source), "--gallery", gallery, "--import-id", import_id,
                    "--wait", "--url", args.url, "--address", args.address,
                ])
                elapsed = time.perf_counter() - started
            state = client.import_state(import_id)
            client.delete_gallery(gallery)
            rows.append({
                "photos": size, "exit_code": code, "counts": state["counts"], "loadavg_before": load, "loadavg_after": os.getloadavg(),
                "chain_images_per_s": round(chain, 2), "import_images_per_s": round(size / elapsed, 2),
                "ratio": round(size / elapsed / chain, 2), "import_wall_s": round(elapsed, 1),
                "driver_peak_rss_mib": round(peak.driver / 2**20), "actors_peak_rss_mib": round(peak.actors / 2**20),
            })
    print(f"{'photos':>7}{'chain img/s':>13}{'import img/s':>14}{'ratio':>7}{'driver MiB':>12}{'actors MiB':>12}{'load 1m':>9}")
    for row in rows:
        print(f"{row['photos']:>7}{row['chain_images_per_s']:>13.2f}{row['import_images_per_s']:>14.2f}{row['ratio']:>7.2f}"
              f"{row['driver_peak_rss_mib']:>12}{row['actors_peak_rss_mib']:>12}{row['loadavg_before'][0]:>9.2f}")
        print(f"        outcomes: {row['counts']}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
