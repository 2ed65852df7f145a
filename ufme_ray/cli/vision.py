"""`ufme-ray analyze | compare | models | calibrate`: the vision pipeline and its model files (with
the int8 variants `models quantize` builds), here, without a cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ufme_ray.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, load_settings, say
from ufme_ray.config import UfmeSettings
from ufme_ray.models.variants import LOCAL_MANIFEST
from ufme_ray.vision.errors import ImageError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _read(path: str, settings: UfmeSettings) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(settings.image.max_bytes + 1)  # one byte over the limit is enough to refuse it


def cmd_analyze(args: argparse.Namespace) -> int:
    from ufme_ray.vision.pipeline import Pipeline

    settings = load_settings(args)
    pipeline = Pipeline.from_settings(settings)
    status = EXIT_OK
    for path in args.images:
        try:
            result = {"image": path, **pipeline.analyze(_read(path, settings)).to_dict(include_embedding=args.embeddings)}
        except (ImageError, OSError) as exc:
            result = {"image": path, "error": {"code": getattr(exc, "code", "unreadable"), "message": str(exc)}}
            status = EXIT_FAILED
        result["thresholds"] = pipeline.thresholds.as_dict()
        print(json.dumps(result, indent=None if args.compact else 2))
    return status


def cmd_compare(args: argparse.Namespace) -> int:
    from ufme_ray.vision.pipeline import Pipeline

    settings = load_settings(args)
    pipeline = Pipeline.from_settings(settings)
    try:
        comparison = pipeline.compare(_read(args.first, settings), _read(args.second, settings))
    except (ImageError, OSError) as exc:
        print(json.dumps({"error": {"code": getattr(exc, "code", "unreadable"), "message": str(exc)}}))
        return EXIT_FAILED
    print(
        json.dumps(
            {
                "first": args.first,
                "second": args.second,
                "similarity": round(comparison.similarity, 4),
                "threshold": comparison.threshold,
                "match": comparison.match,
            },
            indent=2,
        )
    )
    return EXIT_OK


def _verify_exit_code(states: list[str]) -> int:
    """`models verify`: 0 if every model is ok, 1 if any is corrupt, else 2 (missing or unverifiable)."""
    if "corrupt" in states:
        return EXIT_FAILED
    return EXIT_OK if all(state == "ok" for state in states) else EXIT_USAGE


def cmd_models(args: argparse.Namespace) -> int:
    from ufme_ray.models import store
    from ufme_ray.vision.registry import ModelSpecs, manifest_for

    settings = load_settings(args)
    manifest = manifest_for(settings)
    # Without names, verify/pull cover the models the settings select (plus, for verify, any other
    # file already present); --all covers the whole manifest.
    names = args.names or None
    if names is None and not getattr(args, "all", False):
        names = ModelSpecs.from_settings(settings).names
        if args.models_command == "verify":
            present = [s.name for s in manifest.models.values() if (Path(settings.model_dir) / s.file).exists()]
            names = list(dict.fromkeys(names + present))
    if args.models_command == "list":
        rows = store.list_models(manifest, settings.model_dir)
        print(f"model folder: {settings.model_dir}")
        print(f"{'name':<28}{'kind':<10}{'state':<14}{'licence / source'}")
        for row in rows:
            print(f"{row.name:<28}{row.kind:<10}{row.state:<14}{row.licence}\n{'':<52}{row.source}")
        return EXIT_OK
    if args.models_command == "verify":
        statuses = store.verify_models(settings.model_dir, manifest, names)
        for status in statuses:
            detail = "" if status.ok else f"  expected {status.expected_sha256}, got {status.actual_sha256}"
            print(f"{status.state:<13}{status.name:<28}{status.path}{detail if status.state == 'corrupt' else ''}")
        return _verify_exit_code([status.state for status in statuses])
    results = store.pull_models(settings.model_dir, manifest, names, source=args.source, progress=not args.quiet, force=args.force)
    for result in results:
        line = f"{result.outcome:<11}{result.name:<28}{result.path}"
        print(line if result.ok else f"{line}\n           {result.error}")
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILED


def cmd_quantize(args: argparse.Namespace) -> int:
    from ufme_ray.models.variants import variant_name
    from ufme_ray.vision.quantize import calibration_detector, calibration_photos, check_quantizable, quantize_model
    from ufme_ray.vision.registry import manifest_for

    settings = load_settings(args)
    manifest = manifest_for(settings)
    specs = [manifest.get(name) for name in args.names or [settings.models.detector, settings.models.embedder]]
    for spec in specs:  # every name checked before the first model is built
        check_quantizable(spec)
    photos = calibration_photos(args.photos, args.count)
    out = args.out or settings.model_dir
    # Embedders are calibrated on the faces the configured detector finds, at fp32 whatever
    # runtime.precision says: this command is how a missing int8 variant gets built.
    detector = calibration_detector(settings, manifest) if any(s.kind == "embedder" for s in specs) else None
    say(f"calibrating on {len(photos)} photos from {', '.join(map(str, args.photos))}")
    for spec in specs:
        variant = quantize_model(settings.model_dir, spec, photos, out, detector=detector, activations=args.activations)
        say(f"quantized  {variant.name:<28}{out / variant.file}  {spec.bytes or '?'} -> {variant.bytes} bytes, "
            f"{variant.calibration.inputs} calibration inputs")
    say(f"recorded in {out / LOCAL_MANIFEST}; runtime.precision: int8 (UFME_RUNTIME__PRECISION=int8) runs them, "
        f"or name one alone: models.{specs[-1].kind}: {variant_name(specs[-1].name, 'int8')}")
    if Path(out).resolve() != Path(settings.model_dir).resolve():
        say(f"note: the model folder must hold them beside the fp32 files: copy {out}'s files into it, or point "
            "UFME_MODEL_DIR at a folder holding both")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np
    import yaml

    from ufme_ray.calibration import calibrate, labelled_embeddings
    from ufme_ray.vision.pipeline import Pipeline

    settings = load_settings(args)
    pipeline = Pipeline.from_settings(settings)
    labels, vectors = [], []
    for folder in args.faces:
        found_labels, found_vectors, _ = labelled_embeddings(pipeline, folder)
        labels += [f"{folder.name}/{label}" for label in found_labels]
        vectors.append(found_vectors)
    source = f"{', '.join(str(f) for f in args.faces)} ({settings.models.detector} + {settings.models.embedder})"
    calibration, points = calibrate(labels, np.concatenate(vectors), sorted(args.far, reverse=True), source)
    print(f"{len(labels)} faces, {calibration.genuine_pairs} genuine and {calibration.impostor_pairs} impostor pairs")
    print(f"{'target FAR':>11}{'threshold':>11}{'TAR':>8}{'measured FAR':>14}")
    for point in points:
        print(f"{point.far:>11g}{point.threshold:>11.4f}{point.tar:>8.4f}{point.measured_far:>14.2e}")
    if min(args.far) < calibration.resolution:
        print(f"note: {calibration.impostor_pairs} impostor pairs cannot measure a FAR below {calibration.resolution:.1e}")
    if args.write_config is not None:
        strictest = points[-1]
        existing = yaml.safe_load(args.write_config.read_text()) if args.write_config.exists() else {}
        existing.setdefault("thresholds", {})["similarity_min"] = round(strictest.threshold, 4)
        args.write_config.write_text(yaml.safe_dump(existing, sort_keys=False))
        print(f"wrote thresholds.similarity_min = {strictest.threshold:.4f} (FAR {strictest.far:g}) to {args.write_config}")
    if args.write_calibration is not None:
        args.write_calibration.write_text(calibration.model_dump_json(indent=2))
        print(f"wrote the calibration to {args.write_calibration}")
    return EXIT_OK


def cmd_calibrate_pad(args: argparse.Namespace) -> int:
    import numpy as np

    from ufme_ray.calibration import main_faces, pad_error_rates
    from ufme_ray.vision.pipeline import Pipeline

    settings = load_settings(args)
    pipeline = Pipeline.from_settings(settings)
    scores = {}
    for kind, folders in (("bona fide", args.bona_fide), ("attack", args.attacks)):
        found, missed = main_faces(pipeline, folders)
        scores[kind] = np.array([face.liveness for _, face in found], np.float32)
        print(f"{kind}: {len(found)} photos scored, {len(missed)} without a face: {[str(p) for p in missed]}")
    rows = pad_error_rates(scores["bona fide"], scores["attack"], sorted(args.thresholds))
    print(f"liveness models: {', '.join(settings.models.liveness)}")
    print(f"{'threshold':>10}{'BPCER':>8}{'refused':>9}{'APCER':>8}{'accepted':>10}")
    for row in rows:
        print(f"{row['threshold']:>10.2f}{row['bpcer']:>8.3f}{row['bona_fide_refused']:>9}"
              f"{row['apcer']:>8.3f}{row['attacks_accepted']:>10}")
    percentiles = {p: round(float(np.percentile(scores["bona fide"], p)), 3) for p in (1, 5, 10, 25, 50)}
    print(f"bona fide live scores, percentiles: {percentiles}; attacks: {sorted(np.round(scores['attack'], 3).tolist())}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "bona_fide_percentiles": percentiles,
                                         "attack_scores": scores["attack"].tolist()}, indent=1))
    return EXIT_OK


def cmd_calibrate_quality(args: argparse.Namespace) -> int:
    import numpy as np

    from ufme_ray.calibration import main_faces, quality_levels
    from ufme_ray.vision.pipeline import Pipeline

    settings = load_settings(args)
    pipeline = Pipeline.from_settings(settings)
    found, missed = main_faces(pipeline, args.faces)
    qualities = np.array([face.quality for _, face in found], np.float32)
    labels = [str(path.parent) for path, _ in found]
    vectors = np.stack([face.embedding for _, face in found])
    refuse = {"low": args.low, "medium": args.medium, "high": args.high}
    rows = quality_levels(qualities, labels, vectors, pipeline.thresholds.similarity_min, refuse)
    print(f"{len(found)} photos scored by {settings.models.quality}, {len(missed)} without a face")
    print(f"{'level':>7}{'threshold':>11}{'refused':>9}{'genuine pairs':>15}{'match rate':>12}")
    for row in rows:
        print(f"{row['level']:>7}{row['threshold']:>11.4f}{row['photos_refused']:>9}{row['genuine_pairs']:>15}"
              f"{row['genuine_match_rate'] if row['genuine_match_rate'] is not None else '-':>12}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return EXIT_OK


def add_parsers(commands: argparse._SubParsersAction) -> None:
    analyze = commands.add_parser("analyze", help="detect and score every face in images; prints JSON per image")
    analyze.add_argument("images", nargs="+")
    analyze.add_argument("--embeddings", action="store_true", help="include the embedding vectors")
    analyze.add_argument("--compact", action="store_true", help="one JSON line per image")
    analyze.set_defaults(handler=cmd_analyze)

    compare = commands.add_parser("compare", help="similarity of the main faces of two images and the decision")
    compare.add_argument("first")
    compare.add_argument("second")
    compare.set_defaults(handler=cmd_compare)

    models = commands.add_parser("models", help="list, verify or pull model files")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="every model in the manifest and whether it is installed")
    listing.set_defaults(names=[])
    verify = model_commands.add_parser("verify", help="check each file's sha256; exit 1 if corrupt, 2 if missing")
    verify.add_argument("names", nargs="*", help="only these models (default: the configured ones and any present)")
    verify.add_argument("--all", action="store_true", help="every model of the manifest")
    pull = model_commands.add_parser("pull", help="download, verify and install model files; exit 1 if any fails")
    pull.add_argument("names", nargs="*", help="only these models (default: the configured ones)")
    pull.add_argument("--all", action="store_true", help="every model of the manifest")
    pull.add_argument("--from", dest="source", help="mirror: http(s) base URL, folder, or s3://bucket/prefix?…")
    pull.add_argument("--force", action="store_true", help="download even if a verified file is present")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    for sub in (listing, verify, pull):
        sub.set_defaults(handler=cmd_models)
    pad = commands.add_parser(
        "calibrate-pad", help="BPCER and APCER of the liveness gate at candidate thresholds, from photo folders"
    )
    pad.add_argument("--bona-fide", type=Path, nargs="+", required=True, help="folders of genuine photos")
    pad.add_argument("--attacks", type=Path, nargs="+", required=True, help="folders of presentation attacks")
    pad.add_argument("--thresholds", type=float, nargs="+",
                     default=[0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95])
    pad.add_argument("--json", type=Path, help="also write the table here")
    pad.set_defaults(handler=cmd_calibrate_pad)

    quality = commands.add_parser(
        "calibrate-quality", help="quality filter levels (low/medium/high) from a labelled photo set"
    )
    quality.add_argument("--faces", type=Path, nargs="+", required=True, help="<identity>/<photo> folders")
    quality.add_argument("--low", type=float, default=0.05, help="share of the set's photos the low level refuses")
    quality.add_argument("--medium", type=float, default=0.15)
    quality.add_argument("--high", type=float, default=0.35)
    quality.add_argument("--json", type=Path, help="also write the table here")
    quality.set_defaults(handler=cmd_calibrate_quality)

    quantize = model_commands.add_parser(
        "quantize", help="build int8 variants of the detector and the embedder, calibrated on your photos"
    )
    quantize.add_argument("--photos", type=Path, nargs="+", required=True,
                          help="folders of face photos (searched recursively) like those the service will see")
    quantize.add_argument("--models", dest="names", nargs="+", metavar="NAME",
                          help="detectors / embedders to quantize (default: the configured detector and embedder)")
    quantize.add_argument("--count", type=_positive, default=200,
                          help="calibrate on at most this many photos, spread over the sorted list (default 200)")
    quantize.add_argument("--out", type=Path,
                          help="write the variants and models.local.yaml here (default: the model folder)")
    quantize.add_argument("--activations", choices=("uint8", "int8"), default="uint8",
                          help="uint8 (default; onnxruntime's fast path on x86-64) or int8 (S8S8, the fast one on ARM)")
    quantize.set_defaults(handler=cmd_quantize)

    calibrate = commands.add_parser("calibrate", help="similarity thresholds for target FARs from labelled photos")
    calibrate.add_argument("--faces", type=Path, nargs="+", required=True, help="folders of <identity>/<photo>")
    calibrate.add_argument("--far", type=float, nargs="+", default=[1e-3])
    calibrate.add_argument("--write-config", type=Path, help="set thresholds.similarity_min (strictest FAR) in this YAML")
    calibrate.add_argument("--write-calibration", type=Path, help="write the calibration JSON (for a model manifest)")
    calibrate.set_defaults(handler=cmd_calibrate)
