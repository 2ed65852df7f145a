"""Accuracy of the in-process pipeline on a labelled photo folder (default ../shared/faces).

Prints a report and writes it as JSON:
- verification: TAR at FAR 1e-2 and 1e-3 (all pairs), with the thresholds giving them, per set;
- open-set identification on LFW: one enrolled image per identity with >= 4 images, the rest as
  probes, the single-image identities as unknown probes: rank-1, FNIR at FPIR 1%;
- liveness scores of the PAD samples (pad/live, pad/print, pad/replay);
- mean quality of clean faces vs blurred / JPEG-compressed / noised versions.

With `--precision fp32 int8` the whole evaluation runs once per precision (`runtime.precision`:
the int8 variants `ufme-ray models quantize` recorded in the model folder) and prints the results
side by side, with the int8 detector's agreement with the fp32 one (face counts, box IoU) on the
same photos; `int8-embedder` / `int8-detector` run that model's variant alone, the other at fp32.

Usage: python scripts/eval_accuracy.py [--faces DIR] [--out FILE] [--detector NAME] [--embedder NAME]
                                       [--model-dir DIR] [--precision fp32 [int8] [int8-embedder] ...]
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
from ufme_ray.config import ImageLimits, UfmeSettings
from ufme_ray.evaluation import open_set_identification, operating_point, pair_scores
from ufme_ray.models.errors import ModelsError
from ufme_ray.models.variants import read_local_manifest
from ufme_ray.vision.detector import DetectedFace, FaceDetector
from ufme_ray.vision.image import read_image_file
from ufme_ray.vision.pipeline import Pipeline
from ufme_ray.vision.registry import PRECISION_MIXES, precision_mix

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


def evaluate(pipeline: Pipeline, faces: Path) -> dict:
    """Every measure of the module docstring for one pipeline."""
    report: dict = {"detector_file": pipeline.detector.spec.file, "embedder_file": pipeline.embedder.spec.file}
    lfw_labels, lfw_vectors, lfw_missed = labelled_embeddings(pipeline, faces / "lfw")
    deepface_labels, deepface_vectors, deepface_missed = labelled_embeddings(pipeline, faces / "deepface")
    report["no_face_found"] = [str(p.relative_to(faces)) for p in lfw_missed + deepface_missed]
    report["verification"] = {
        "lfw": verification(lfw_labels, lfw_vectors),
        "deepface": verification(deepface_labels, deepface_vectors),
    }
    report["identification_lfw"] = identification(lfw_labels, lfw_vectors)
    report["liveness"] = liveness_samples(pipeline, faces)
    if pipeline.quality is not None:
        report["quality"] = quality_under_degradation(pipeline, labelled_photos(faces, "lfw"), limit=120)
    return report


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


FacePair = tuple[DetectedFace, DetectedFace, float]


def _matched(reference: list[DetectedFace], candidate: list[DetectedFace]) -> list[FacePair]:
    """Greedy one-to-one pairs, best IoU first; pairs under IoU 0.5 are different faces."""
    pairs = sorted(
        ((_iou(r.box, c.box), i, j) for i, r in enumerate(reference) for j, c in enumerate(candidate)), reverse=True
    )
    used_r, used_c, matched = set(), set(), []
    for iou, i, j in pairs:
        if iou >= 0.5 and i not in used_r and j not in used_c:
            used_r.add(i)
            used_c.add(j)
            matched.append((reference[i], candidate[j], iou))
    return matched


def detector_agreement(reference: FaceDetector, candidate: FaceDetector, faces: Path, photos: list[Path]) -> dict:
    """Does `candidate` find the faces `reference` finds? Counts, box IoU, landmark shift, score change.
    Photos are named relative to `faces`, as the rest of the report names them."""
    counts_differ, ious, shifts, score_changes = [], [], [], []
    faces_reference = faces_candidate = 0
    for path in tqdm(photos, desc="detector agreement", unit="img"):
        image = read_image_file(str(path), ImageLimits()).bgr
        found_r, found_c = reference.detect(image), candidate.detect(image)
        faces_reference += len(found_r)
        faces_candidate += len(found_c)
        if len(found_r) != len(found_c):
            counts_differ.append({"photo": str(path.relative_to(faces)), "reference": len(found_r),
                                  "candidate": len(found_c)})
        for face_r, face_c, iou in _matched(found_r, found_c):
            ious.append(iou)
            # Landmark shift as a fraction of the face width: what moves the aligned crop.
            shifts.append(float(np.linalg.norm(face_r.landmarks - face_c.landmarks, axis=1).mean() / face_r.width))
            score_changes.append(abs(face_r.score - face_c.score))
    return {
        "photos": len(photos),
        "photos_same_count": len(photos) - len(counts_differ),
        "faces_reference": faces_reference,
        "faces_candidate": faces_candidate,
        "faces_matched": len(ious),
        "iou_mean": float(np.mean(ious)),
        "iou_min": float(np.min(ious)),
        "iou_p01": float(np.percentile(ious, 1)),
        "landmark_shift_mean": float(np.mean(shifts)),
        "landmark_shift_max": float(np.max(shifts)),
        "score_change_mean": float(np.mean(score_changes)),
        "counts_differ": counts_differ,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=Path("../shared/faces"))
    parser.add_argument("--out", type=Path, default=Path("bench-results/eval_accuracy.json"))
    parser.add_argument("--detector", help="detector model name (default: settings)")
    parser.add_argument("--embedder", help="embedder model name (default: settings)")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: settings, UFME_MODEL_DIR)")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISION_MIXES, default=["fp32"],
        help="evaluate at each precision, side by side (int8: the variants `ufme-ray models quantize` recorded; "
        "int8-embedder / int8-detector: that model's alone, the other fp32)",
    )
    args = parser.parse_args(argv)

    overrides = {"model_dir": args.model_dir} if args.model_dir else {}
    base = UfmeSettings.load(**overrides)
    models = base.models.model_copy(
        update={k: v for k, v in {"detector": args.detector, "embedder": args.embedder}.items() if v}
    )
    precisions = list(dict.fromkeys(args.precision))
    try:
        # Every pipeline loads before any photo is read: a missing int8 variant refuses at once.
        pipelines = {
            precision: Pipeline.from_settings(
                UfmeSettings.load(**overrides, **precision_mix(precision, base.model_copy(update={"models": models})))
            )
            for precision in precisions
        }
    except ModelsError as exc:
        print(f"eval_accuracy: {exc}", file=sys.stderr)
        return 2
    used = {p.detector.spec.name for p in pipelines.values()} | {p.embedder.spec.name for p in pipelines.values()}
    report: dict = {
        "detector": models.detector,
        "embedder": models.embedder,
        "faces": str(args.faces),
        "variants": {
            name: variant.model_dump(mode="json")
            for name, variant in read_local_manifest(base.model_dir).variants.items()
            if name in used
        },
        "by_precision": {precision: evaluate(pipeline, args.faces) for precision, pipeline in pipelines.items()},
    }
    int8_detector = next((p.detector for p in pipelines.values() if p.detector.spec.variant_of is not None), None)
    if "fp32" in pipelines and int8_detector is not None:
        photos = [path for _, path in labelled_photos(args.faces, "lfw")]
        photos += sorted((args.faces / "deepface").rglob("*.jpg"))
        report["detector_agreement"] = detector_agreement(pipelines["fp32"].detector, int8_detector, args.faces, photos)

    print(f"\nmodel folder: {base.model_dir}")
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def _rows(run: dict) -> dict[str, float | None]:
    """One run's printed measures, by row label, in print order."""
    rows: dict[str, float | None] = {}
    for name, v in run["verification"].items():
        rows[f"{name} genuine mean"] = v["genuine_mean"]
        rows[f"{name} impostor mean"] = v["impostor_mean"]
        for point in v["operating_points"]:
            rows[f"{name} TAR@FAR={point['far']:g}"] = point["tar"]
            rows[f"{name}   threshold at FAR={point['far']:g}"] = point["threshold"]
    ident = run["identification_lfw"]
    rows["LFW open-set rank-1"] = ident["rank1"]
    rows[f"LFW open-set FNIR@FPIR={ident['fpir_target']:g}"] = ident["fnir"]
    rows["LFW open-set threshold"] = ident["threshold"]
    for name, score in run["liveness"].items():
        rows[f"liveness {name}"] = score
    for name, v in run.get("quality", {}).items():
        rows[f"quality {name} ({v['faces']} faces)"] = v["mean"]
    rows["photos without a face"] = len(run["no_face_found"])
    return rows


def print_report(report: dict) -> None:
    runs = report["by_precision"]
    print(f"models: detector={report['detector']} embedder={report['embedder']}")
    for name, variant in report["variants"].items():
        calibration = variant["calibration"]
        print(f"  {name}: {variant['file']}, {variant['bytes']} bytes, calibrated on {calibration['photos']} photos "
              f"({calibration['inputs']} inputs, list sha256 {calibration['photos_sha256'][:12]}…)")
    for precision, run in runs.items():
        v = run["verification"]
        print(f"  {precision}: {run['detector_file']} + {run['embedder_file']}; images/ids: "
              + ", ".join(f"{name} {s['images']}/{s['identities']} ({s['genuine_pairs']} genuine, "
                          f"{s['impostor_pairs']} impostor pairs)" for name, s in v.items()))
    rows = {precision: _rows(run) for precision, run in runs.items()}
    labels = list(dict.fromkeys(label for table in rows.values() for label in table))
    # Points of each other precision minus the first (fp32): TAR and rank-1 higher is better, FNIR lower.
    names = list(runs)
    compared = names[1:] if names[0] == "fp32" else []
    print(f"\n{'measure':<44}" + "".join(f"{p:>14}" for p in names) + "".join(f"{'Δ ' + p:>18}" for p in compared))
    for label in labels:
        values = [rows[p].get(label) for p in names]
        cells = "".join(f"{'-':>14}" if v is None else f"{v:>14.4f}" for v in values)
        if compared and None not in values and ("TAR" in label or "rank-1" in label or "FNIR" in label):
            cells += "".join(f"{100 * (v - values[0]):>+18.2f}" for v in values[1:])
        print(f"{label:<44}{cells}")
    for precision, run in runs.items():
        if run["no_face_found"]:
            print(f"\n{precision}: no face found in: {run['no_face_found']}")
    agreement = report.get("detector_agreement")
    if agreement:
        print(
            f"\nint8 detector vs fp32 on {agreement['photos']} photos: same face count on "
            f"{agreement['photos_same_count']}; faces {agreement['faces_reference']} fp32 / "
            f"{agreement['faces_candidate']} int8, {agreement['faces_matched']} matched (IoU >= 0.5); "
            f"IoU mean {agreement['iou_mean']:.4f}, 1st percentile {agreement['iou_p01']:.4f}, min "
            f"{agreement['iou_min']:.4f}; landmark shift mean {agreement['landmark_shift_mean']:.4f}, max "
            f"{agreement['landmark_shift_max']:.4f} of the face width; |score change| mean "
            f"{agreement['score_change_mean']:.4f}"
        )
        for differ in agreement["counts_differ"]:
            print(f"  {differ['photo']}: fp32 {differ['reference']} faces, int8 {differ['candidate']}")


if __name__ == "__main__":
    sys.exit(main())
