"""What one GPU gives this engine's own models and gallery search, on a machine where
onnxruntime-gpu cannot be installed.

The GPU machine lent to this project has PyTorch (CUDA 13) but no package registry, and Ray does
not fit the 64 MiB that can be carried to it in one call (onnxruntime-gpu, 244 MiB, is carried in
pieces). So this probe runs the product's in-process chain (`vision.pipeline.Pipeline`: the same
pre- and post-processing, the same ONNX files) on onnxruntime's CPU provider, on its CUDA provider
(`runtime.providers`, where this onnxruntime has it), and with each session replaced by the same
graph converted to PyTorch (onnx2torch) on the GPU; it checks that each answers like the CPU and
times them. It also times exact top-k search (a matrix product + top-k, what a GPU flat index
does) at 1M and 10M templates, and k-means training of IVF centroids, on the GPU and the CPU.
Where a registry and onnxruntime-gpu are available, `scripts/device_check.sh` measures the
product's own GPU path (onnxruntime CUDA provider, and through the service).

    python scripts/device_probe.py --models DIR --photos DIR [--out FILE]
Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx2torch import convert

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ufme_ray from this checkout

from ufme_ray.config import UfmeSettings  # noqa: E402
from ufme_ray.vision.onnx_model import make_batch_dynamic  # noqa: E402
from ufme_ray.vision.pipeline import Pipeline  # noqa: E402
from ufme_ray.vision.registry import ModelSpecs  # noqa: E402


class TorchSession:
    """The slice of `ort.InferenceSession` the vision code uses, over an onnx2torch module."""

    def __init__(self, model: onnx.ModelProto, device: str):
        self._inputs = [SimpleNamespace(name=i.name) for i in model.graph.input]
        self._outputs = [SimpleNamespace(name=o.name) for o in model.graph.output]
        self._module = convert(model).to(device).eval()
        self._device = device

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def get_providers(self):
        return [f"torch:{self._device}"]

    @torch.inference_mode()
    def run(self, _names, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(feeds[i.name])).to(self._device) for i in self._inputs]
        outputs = self._module(*tensors)
        outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
        return [o.float().cpu().numpy() for o in outputs]


def on_torch(pipeline: Pipeline, model_dir: Path, device: str) -> Pipeline:
    """The pipeline with every session swapped for the same graph in PyTorch on `device`."""

    def session(spec, dynamic: bool) -> TorchSession:
        model = onnx.load(str(model_dir / spec.file))
        return TorchSession(make_batch_dynamic(model) if dynamic else model, device)

    pipeline.detector.session = session(pipeline.detector.spec, False)
    pipeline.embedder.session = session(pipeline.embedder.spec, True)
    if pipeline.quality is not None:
        pipeline.quality.session = session(pipeline.quality.spec, False)
    if pipeline.liveness is not None:
        for pad in pipeline.liveness.members:
            pad.session = session(pad.spec, True)
    if pipeline.morph is not None:
        pipeline.morph.session = session(pipeline.morph.spec, True)
    return pipeline


def agreement(reference: Pipeline, candidate: Pipeline, photos: list[bytes]) -> dict:
    """Faces found alike, and how close the scores and embeddings are."""
    same_count, cosines, score_diffs = 0, [], []
    for data in photos:
        a, b = reference.analyze(data), candidate.analyze(data)
        same_count += len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces):
            cosines.append(float(np.dot(fa.embedding, fb.embedding)))
            for name in ("quality", "liveness"):
                if getattr(fa, name) is not None:
                    score_diffs.append(abs(getattr(fa, name) - getattr(fb, name)))
            score_diffs.append(abs(fa.detection_score - fb.detection_score))
    return {
        "photos": len(photos),
        "same_face_count": same_count,
        "embedding_cosine_min": min(cosines),
        "score_abs_diff_max": max(score_diffs),
    }


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def chain_speed(pipeline: Pipeline, photos: list[bytes], batch: int, seconds: float) -> dict:
    """Images/s of the whole chain, one image at a time (batch 1) or `batch` images per call."""
    pipeline.analyze_many(photos[:batch])  # warm-up (CUDA kernels, allocator)
    done, latencies, started = 0, [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        chunk = [photos[(done + i) % len(photos)] for i in range(batch)]
        t = time.perf_counter()
        pipeline.analyze_many(chunk)
        latencies.append((time.perf_counter() - t) * 1000)
        done += batch
    elapsed = time.perf_counter() - started
    return {"batch": batch, "images_per_s": done / elapsed, "p50_ms_per_call": float(np.median(latencies))}


def embedder_speed(pipeline: Pipeline, photos: list[bytes], batch: int, device: str, seconds: float) -> dict:
    """Crops/s of the embedder alone at a large batch (what a batching GPU stage could reach)."""
    faces = [(image, face) for data in photos for image in [pipeline.decode(data)] for face in pipeline.detector.detect(image.bgr)[:1]]
    crops = [pipeline.embedder.crop(image.bgr, face) for image, face in faces]
    crops = (crops * (batch // len(crops) + 1))[:batch]
    pipeline.embedder.run(crops)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        pipeline.embedder.run(crops)
        done += batch
    synchronize(device)
    return {"batch": batch, "crops_per_s": done / (time.perf_counter() - started)}


def search_speed(size: int, dim: int, queries: int, k: int, device: str, dtype: torch.dtype) -> dict:
    """Exact top-k by inner product over `size` unit vectors (a flat index), queries per second."""
    generator = torch.Generator(device=device).manual_seed(0)
    gallery = torch.nn.functional.normalize(torch.randn(size, dim, device=device, generator=generator), dim=1).to(dtype)
    probes = torch.nn.functional.normalize(torch.randn(queries, dim, device=device, generator=generator), dim=1).to(dtype)
    chunk = 100 if device == "cpu" else queries
    torch.topk(probes[:chunk] @ gallery.T, k, dim=1)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for start in range(0, queries, chunk):
        torch.topk(probes[start : start + chunk] @ gallery.T, k, dim=1)
    synchronize(device)
    elapsed = time.perf_counter() - started
    return {"size": size, "dim": dim, "queries": queries, "k": k, "dtype": str(dtype), "qps": queries / elapsed}


def kmeans_time(points: int, centroids: int, dim: int, iterations: int, device: str) -> dict:
    """Seconds for Lloyd's k-means (IVF coarse quantizer training) on random unit vectors."""
    generator = torch.Generator(device=device).manual_seed(1)
    data = torch.nn.functional.normalize(torch.randn(points, dim, device=device, generator=generator), dim=1)
    centres = data[torch.randperm(points, device=device, generator=generator)[:centroids]].clone()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        nearest = torch.cat([torch.argmax(part @ centres.T, dim=1) for part in data.split(65536)])
        sums = torch.zeros_like(centres).index_add_(0, nearest, data)
        counts = torch.bincount(nearest, minlength=centroids).clamp(min=1).unsqueeze(1)
        centres = torch.nn.functional.normalize(sums / counts, dim=1)
    synchronize(device)
    return {"points": points, "centroids": centroids, "dim": dim, "iterations": iterations, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--photos", type=Path, required=True, help="folder of <person>/<photo>.jpg")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each timed run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--kmeans-points", type=int, default=500_000)
    parser.add_argument("--skip-search", action="store_true", help="the vision chain only")
    parser.add_argument("--out", type=Path, default=Path("bench-results/device_probe.json"))
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    photos = [p.read_bytes() for p in sorted(args.photos.glob("*/*.jpg"))]
    settings = UfmeSettings(model_dir=args.models, data_dir=Path("/tmp/ufme-probe"))
    report: dict = {
        "machine": {
            "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
            "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": ort.__version__, "onnxruntime_providers": ort.get_available_providers(),
            "load_at_start": os.getloadavg(), "photos": len(photos),
            "models": ModelSpecs.from_settings(settings).names,
        }
    }
    print(json.dumps(report["machine"], indent=1))
    cpu = Pipeline.from_settings(settings)
    runtimes = {"onnxruntime CPU": cpu}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # cuDNN's convolution search: a heuristic pick, and onnxruntime's default (exhaustive, redone for
        # every new input shape; the per-face models see a new batch size with most face counts).
        for name, cuda in (("ORT CUDA heuristic", ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})),
                           ("ORT CUDA exhaustive", ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "EXHAUSTIVE"}))):
            runtime = settings.runtime.model_copy(update={"providers": [cuda, "CPUExecutionProvider"]})
            runtimes[name] = Pipeline.from_settings(settings.model_copy(update={"runtime": runtime}))
    runtimes[f"torch {device}"] = on_torch(Pipeline.from_settings(settings), args.models, device)
    report["providers"] = {name: pipeline.providers for name, pipeline in runtimes.items() if hasattr(pipeline, "providers")}
    print("sessions got:", json.dumps(report["providers"]))
    report["agreement_with_onnxruntime_cpu"] = {
        name: agreement(cpu, pipeline, photos[:40]) for name, pipeline in runtimes.items() if pipeline is not cpu
    }
    print("agreement:", json.dumps(report["agreement_with_onnxruntime_cpu"]))

    rows = []
    for name, pipeline in runtimes.items():
        for batch in (1, 32):
            row = {"runtime": name, **chain_speed(pipeline, photos, batch, args.seconds)}
            rows.append(row)
            print(f"chain  {name:<18} batch {batch:>3}: {row['images_per_s']:8.1f} images/s  p50 {row['p50_ms_per_call']:7.1f} ms/call")
        row = {"runtime": name, **embedder_speed(pipeline, photos, 256, device if name.startswith("torch") else "cpu", args.seconds / 2)}
        rows.append(row)
        print(f"embedder {name:<16} batch 256: {row['crops_per_s']:8.1f} crops/s")
    report["chain"] = rows

    searches = []
    for size in [] if args.skip_search else args.sizes:
        for where, dtype in ((device, torch.float16), ("cpu", torch.float32)):
            if where == "cpu" and size > 1_000_000:
                continue  # 10M exact on the CPU takes minutes per 100 queries: 1M gives the rate
            row = {"device": where, **search_speed(size, 128, 1000 if where != "cpu" else 100, 100, where, dtype)}
            searches.append(row)
            print(f"search {where:<5} {size:>11,} x 128 {row['dtype']:<14}: {row['qps']:10.1f} queries/s (exact, top-100)")
    report["search"] = searches
    trainings = []
    for where in [] if args.skip_search else dict.fromkeys((device, "cpu")):
        row = {"device": where, **kmeans_time(args.kmeans_points, 4096, 128, 10, where)}
        trainings.append(row)
        print(f"k-means {where:<5} {args.kmeans_points:,} x 128 -> 4096 centroids, 10 iterations: {row['seconds']:.2f} s")
    report["kmeans"] = trainings
    report["load_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
