"""The `ufme-ray` command. Subcommands parse into the settings models and call library functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.vision.errors import ImageError, VisionError

logger = logging.getLogger("ufme_ray")


def _settings(args: argparse.Namespace) -> UfmeSettings:
    overrides = {}
    if getattr(args, "model_dir", None):
        overrides["model_dir"] = args.model_dir
    return UfmeSettings.load(args.config, **overrides)


def _read(path: str, settings: UfmeSettings) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(settings.image.max_bytes + 1)


def cmd_analyze(args: argparse.Namespace) -> int:
    from ufme_ray.vision.pipeline import Pipeline

    settings = _settings(args)
    pipeline = Pipeline.from_settings(settings)
    status = 0
    for path in args.images:
        try:
            result = {"image": path, **pipeline.analyze(_read(path, settings)).to_dict(include_embedding=args.embeddings)}
        except (ImageError, OSError) as exc:
            result = {"image": path, "error": {"code": getattr(exc, "code", "unreadable"), "message": str(exc)}}
            status = 1
        result["thresholds"] = pipeline.thresholds.as_dict()
        print(json.dumps(result, indent=None if args.compact else 2))
    return status


def cmd_compare(args: argparse.Namespace) -> int:
    from ufme_ray.vision.pipeline import Pipeline

    settings = _settings(args)
    pipeline = Pipeline.from_settings(settings)
    try:
        comparison = pipeline.compare(_read(args.first, settings), _read(args.second, settings))
    except (ImageError, OSError) as exc:
        print(json.dumps({"error": {"code": getattr(exc, "code", "unreadable"), "message": str(exc)}}))
        return 1
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
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ufme_ray.vision import model_store
    from ufme_ray.vision.registry import ModelSpecs, manifest_for

    settings = _settings(args)
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
        rows = model_store.list_models(manifest, settings.model_dir)
        print(f"model folder: {settings.model_dir}")
        print(f"{'name':<24}{'kind':<10}{'state':<14}{'licence / source'}")
        for row in rows:
            print(f"{row.name:<24}{row.kind:<10}{row.state:<14}{row.licence}\n{'':<48}{row.source}")
        return 0
    if args.models_command == "verify":
        statuses = model_store.verify_models(settings.model_dir, manifest, names)
        for status in statuses:
            detail = "" if status.ok else f"  expected {status.expected_sha256}, got {status.actual_sha256}"
            print(f"{status.state:<13}{status.name:<24}{status.path}{detail if status.state == 'corrupt' else ''}")
        return model_store.verify_exit_code(statuses)
    results = model_store.pull_models(
        settings.model_dir, manifest, names, source=args.source, progress=not args.quiet, force=args.force
    )
    for result in results:
        line = f"{result.outcome:<11}{result.name:<24}{result.path}"
        print(line if result.ok else f"{line}\n           {result.error}")
    return model_store.pull_exit_code(results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ufme-ray", description="UFME-Ray face-matching engine")
    parser.add_argument("--config", type=Path, help="settings YAML (environment UFME_* overrides it)")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: UFME_MODEL_DIR or the pull cache)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

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
    model_commands.add_parser("list", help="every model in the manifest and whether it is installed")
    verify = model_commands.add_parser("verify", help="check each file's sha256; exit 1 if corrupt, 2 if missing")
    verify.add_argument("names", nargs="*", help="only these models (default: the configured ones and any present)")
    verify.add_argument("--all", action="store_true", help="every model of the manifest")
    pull = model_commands.add_parser("pull", help="download, verify and install model files")
    pull.add_argument("names", nargs="*", help="only these models (default: the configured ones)")
    pull.add_argument("--all", action="store_true", help="every model of the manifest")
    pull.add_argument("--from", dest="source", help="mirror: http(s) base URL, folder, or s3://bucket/prefix?…")
    pull.add_argument("--force", action="store_true", help="download even if a verified file is present")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    for sub in (model_commands.choices["list"], verify, pull):
        sub.set_defaults(handler=cmd_models, names=getattr(sub, "names", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "names"):
        args.names = None
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"ufme-ray: {exc}", file=sys.stderr)
        return 2
    except VisionError as exc:
        print(f"ufme-ray: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
