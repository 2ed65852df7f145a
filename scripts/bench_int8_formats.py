"""Which int8 format pays on this CPU: the detector's and the embedder's sessions alone, fp32 beside
int8 in onnxruntime's formats (QDQ S8S8, `ufme-ray models quantize --activations int8`; QDQ U8S8,
its default; QOperator U8S8), at one intra-op thread (as a stage replica runs) and at onnxruntime's
default (all cores).

Each graph is calibrated on the same photos' session inputs (`vision.quantize.quantize_graph`) and
timed on them; nothing is written to the model folder.
    python scripts/bench_int8_formats.py [--photos ../shared/faces/lfw] [--count 40] [--out bench-results/bench_int8_formats.json]
Prints p50 ms per session call and writes JSON. Quiet machine only: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from onnxruntime.quantization import QuantFormat, QuantType
from tqdm import tqdm

from ufme_ray.config import UfmeSettings
from ufme_ray.models.store import resolve_model_path
from ufme_ray.vision.quantize import calibration_detector, detector_inputs, embedder_inputs, quantize_graph
from ufme_ray.vision.registry import manifest_for

FORMATS = {
    "QDQ S8S8": (QuantFormat.QDQ, QuantType.QInt8),
    "QDQ U8S8 (the default)": (QuantFormat.QDQ, QuantType.QUInt8),
    "QOperator U8S8": (QuantFormat.QOperator, QuantType.QUInt8),
}


def p50_ms(path: Path, tensors: list, threads: int, rounds: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for tensor in tensors[:3]:  # warm-up
        session.run(None, {name: tensor})
    times = []
    for tensor in tensors * rounds:
        started = time.perf_counter()
        session.run(None, {name: tensor})
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=Path("../shared/faces/lfw"))
    parser.add_argument("--count", type=int, default=40, help="photos (the first of each person)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/bench_int8_formats.json"))
    args = parser.parse_args(argv)
    photos = sorted(args.photos.glob("*/*_0001.jpg"))[: args.count]
    if not photos:
        print(f"no photos under {args.photos}", file=sys.stderr)
        return 2
    settings = UfmeSettings.load()
    manifest = manifest_for(settings)
    detector = calibration_detector(settings, manifest)
    models = (manifest.get(settings.models.detector, "detector"), manifest.get(settings.models.embedder, "embedder"))
    report = {"load_average_before": os.getloadavg(), "photos": len(photos), "rows": []}
    with tempfile.TemporaryDirectory(prefix="ufme-int8-formats-") as work:
        for spec, rounds in zip(models, (2, 5)):
            inputs = detector_inputs(spec, photos) if spec.kind == "detector" else embedder_inputs(spec, detector, photos)
            tensors = list(inputs)
            graphs = {"fp32": resolve_model_path(settings.model_dir, spec, verify=True)}
            for label, (quant_format, activation_type) in tqdm(FORMATS.items(), desc=f"quantizing {spec.name}"):
                graphs[label] = Path(work) / f"{spec.kind}-{len(graphs)}.onnx"
                quantize_graph(graphs["fp32"], graphs[label], iter(tensors), activation_type=activation_type,
                               quant_format=quant_format)
            for label, path in graphs.items():
                row = {"model": spec.name, "format": label, "inputs": len(tensors),
                       "p50_ms_1_thread": p50_ms(path, tensors, 1, rounds), "p50_ms_all_cores": p50_ms(path, tensors, 0, rounds)}
                report["rows"].append(row)
    report["load_average_after"] = os.getloadavg()
    print(f"\n{'model':<26}{'format':<24}{'1 thread ms':>12}{'all cores ms':>14}{'× fp32 (1 thread)':>19}")
    fp32 = {r["model"]: r["p50_ms_1_thread"] for r in report["rows"] if r["format"] == "fp32"}
    for row in report["rows"]:
        row["speedup_1_thread"] = fp32[row["model"]] / row["p50_ms_1_thread"]
        print(f"{row['model']:<26}{row['format']:<24}{row['p50_ms_1_thread']:>12.2f}{row['p50_ms_all_cores']:>14.2f}"
              f"{row['speedup_1_thread']:>19.2f}")
    print(f"load average before {report['load_average_before']}, after {report['load_average_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
