"""Accuracy of the in-process pipeline on a labelled photo folder (default ../shared/faces).

Prints a report and writes it as JSON:
- verification: TAR at FAR 1e-2 and 1e-3 (all pairs), with the thresholds giving them, per set;
- open-set identification on LFW: one enrolled image per identity with >= 4 images, the rest as
  probes, the single-image identities as unknown probes: rank-1, FNIR at FPIR 1%;
- liveness scores of the PAD samples (pad/live, pad/print, pad/replay);
- mean quality of clean faces vs blurred / JPEG-compressed / noised versions.

Usage: python scripts/eval_accuracy.py [--faces DIR] [--out FILE] [--detector NAME] [--embedder NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ufme_ray.calibration import labelled_embeddings
from ufme_ray.config import UfmeSettings
from ufme_ray.evaluation import open_set_identification, operating_point, pair_scores
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.pipeline import Pipeline

FARS = (1e-2, 1e-3)


def labelled_photos(root: Path, subset: str) -> list[tuple[str, Path]]:
    folders = sorted(p for p in (root / subset).iterdir() if p.is_dir() and not p.name.startswith("_"))
    return [(folder.name, photo) for folder in folders for photo in sorted(folder.glob("*.jpg"))]


def verification(labels: list[str], vectors: np.ndarray) -> dict:
    genuine, impostor = pair_scores(vectors, labels)
    return {
        "images": len(labels),
        "identities": len(set(labels)),
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "genuine_mean": float(genuine.mean()),
        "impostor_mean": float(impostor.mean()),
        "operating_points": [vars(operating_point(genuine, impostor, far)) for far in FARS],
    }


def identification(labels: list[str], vectors: np.ndarray) -> dict:
    by_identity: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_identity[label].append(index)
    enrolled = {label: rows[0] for label, rows in by_identity.items() if len(rows) >= 4}
    gallery_labels = sorted(enrolled)
    gallery = vectors[[enrolled[label] for label in gallery_labels]]
    probe_rows, probe_labels = [], []
    for label, rows in by_identity.items():
        if label in enrolled:
            probe_rows += rows[1:]
            probe_labels += [label] * (len(rows) - 1)
        elif len(rows) == 1:
            probe_rows.append(rows[0])
            probe_labels.append(None)
    result = open_set_identification(gallery, gallery_labels, vectors[probe_rows], probe_labels, fpir=0.01)
    return {"enrolled": len(gallery_labels), **vars(result)}


def liveness_samples(pipeline: Pipeline, root: Path) -> dict:
    results = {}
    for kind in ("live", "print", "replay"):
        for path in sorted((root / "pad" / kind).glob("*.jpg")):
            face = pipeline.analyze_decoded([read_image_file(str(path), pipeline.settings.image)])[0].main_face()
            results[f"{kind}/{path.name}"] = None if face is None else face.liveness
    return results


DEGRADATIONS = {
    "clean": lambda img, rng: img,
    "gaussian_blur_sigma3": lambda img, rng: cv2.GaussianBlur(img, (0, 0), 3),
    "jpeg_q5": lambda img, rng: cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 5])[1], cv2.IMREAD_COLOR),
    "gaussian_noise_sigma40": lambda img, rng: np.clip(img + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8),
}


def quality_under_degradation(pipeline: Pipeline, photos: list[tuple[str, Path]], limit: int) -> dict:
    """Mean quality of the same faces (landmarks from the clean photo) under each degradation."""
    rng = np.random.default_rng(0)
    sums: dict[str, list[float]] = defaultdict(list)
    for _, path in tqdm(photos[:limit], desc="quality", unit="img"):
        image = read_image_file(str(path), pipeline.settings.image)
        face = pipeline.detector.detect(image.bgr)
        if not face:
            continue
        for name, degrade in DEGRADATIONS.items():
            crop = pipeline.quality.crop(degrade(image.bgr, rng), face[0])
            sums[name].append(float(pipeline.quality.run([crop])[0]))
    return {name: {"mean": float(np.mean(v)), "faces": len(v)} for name, v in sums.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--out", type=Path, default=Path("bench-results/eval_accuracy.json"))
    parser.add_argument("--detector", help="detector model name (default: settings)")
    parser.add_argument("--embedder", help="embedder model name (default: settings)")
    args = parser.parse_args(argv)

    base = UfmeSettings.load()
    models = base.models.model_copy(
        update={k: v for k, v in {"detector": args.detector, "embedder": args.embedder}.items() if v}
    )
    pipeline = Pipeline.from_settings(UfmeSettings.load(models=models.model_dump()))
    report: dict = {"detector": models.detector, "embedder": models.embedder, "faces": str(args.faces)}

    lfw_labels, lfw_vectors, lfw_missed = labelled_embeddings(pipeline, args.faces / "lfw")
    deepface_labels, deepface_vectors, deepface_missed = labelled_embeddings(pipeline, args.faces / "deepface")
    report["no_face_found"] = [str(p) for p in lfw_missed + deepface_missed]
    report["verification"] = {
        "lfw": verification(lfw_labels, lfw_vectors),
        "deepface": verification(deepface_labels, deepface_vectors),
    }
    report["identification_lfw"] = identification(lfw_labels, lfw_vectors)
    report["liveness"] = liveness_samples(pipeline, args.faces)
    if pipeline.quality is not None:
        report["quality"] = quality_under_degradation(pipeline, labelled_photos(args.faces, "lfw"), limit=120)

    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def print_report(report: dict) -> None:
    print(f"\nmodels: detector={report['detector']} embedder={report['embedder']}")
    print(f"{'set':<10}{'images':>7}{'ids':>5}{'genuine':>9}{'impostor':>10}  " + "  ".join(
        f"TAR@FAR={far:g} (thr)" for far in FARS))
    for name, v in report["verification"].items():
        points = "  ".join(f"{p['tar']:.4f} ({p['threshold']:.3f})    " for p in v["operating_points"])
        print(f"{name:<10}{v['images']:>7}{v['identities']:>5}{v['genuine_mean']:>9.3f}{v['impostor_mean']:>10.3f}  {points}")
    ident = report["identification_lfw"]
    print(
        f"\nopen-set identification (LFW): enrolled {ident['enrolled']}, known probes {ident['known_probes']}, "
        f"unknown probes {ident['unknown_probes']}\n  rank-1 {ident['rank1']:.4f}; at FPIR {ident['fpir_target']:g} "
        f"(threshold {ident['threshold']:.3f}, measured FPIR {ident['fpir']:.4f}): FNIR {ident['fnir']:.4f}"
    )
    print("\nliveness (live probability):")
    for name, score in report["liveness"].items():
        print(f"  {name:<40} {score if score is None else round(score, 4)}")
    if "quality" in report:
        print("\nquality (mean over the same faces):")
        for name, v in report["quality"].items():
            print(f"  {name:<26} {v['mean']:.3f}  ({v['faces']} faces)")
    if report["no_face_found"]:
        print(f"\nno face found in: {report['no_face_found']}")


if __name__ == "__main__":
    sys.exit(main())
