"""The `ufme-ray` command. Each module beside this one adds a group of subcommands whose handlers
parse into the settings models, call library functions and return an exit code; `main` is the one
place that turns the project's expected errors into a message and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import httpx

from ufme_ray.cli import admin, compact, encryption, galleries, imports, k8s, local, vision
from ufme_ray.cli.common import EXIT_ALREADY_RAN, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from ufme_ray.client import UfmeApiError
from ufme_ray.cluster import ClusterError
from ufme_ray.config import ConfigError
from ufme_ray.jobs.submit import CompactionAlreadyRanError
from ufme_ray.k8s.errors import K8sError, RenderError
from ufme_ray.models.errors import ModelsError
from ufme_ray.vision.errors import VisionError

EPILOG = f"""exit codes:
  {EXIT_OK}    done
  {EXIT_FAILED}    failed: a job or a readiness check did not succeed, a model file is corrupt or could not be
       pulled, or a service, the Ray cluster or the Kubernetes API refused or could not be reached,
       or a file could not be read or written
  {EXIT_USAGE}    wrong use: bad arguments or settings, unusable model files, manifests that do not render;
       also `models verify`: nothing corrupt, but a model missing or unverifiable
  {EXIT_ALREADY_RAN}    `compact`, `k8s compact`: the slot's job had already ended, so nothing new was compacted;
       --now compacts now in a slot of its own
  {EXIT_INTERRUPTED}  interrupted
Errors are reported on stderr as `ufme-ray: error: <message>`."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufme-ray", description="UFME-Ray face-matching engine", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="settings YAML (default: the file UFME_CONFIG names; UFME_* variables override it)")
    parser.add_argument("--model-dir", type=Path, help="model folder (default: UFME_MODEL_DIR or the pull cache)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (vision, local, admin, galleries, imports, compact, encryption, k8s):
        group.add_parsers(commands)
    return parser


def _error(message: object, code: int) -> int:
    print(f"ufme-ray: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.handler(args)
    except CompactionAlreadyRanError as exc:
        return _error(exc, EXIT_ALREADY_RAN)
    except (ConfigError, UsageError, RenderError, ModelsError, VisionError) as exc:
        return _error(exc, EXIT_USAGE)
    except (ClusterError, K8sError, UfmeApiError, OSError) as exc:
        return _error(exc, EXIT_FAILED)
    except httpx.RequestError as exc:  # the service is down or unreachable (demo, audit)
        return _error(f"cannot reach {exc.request.url}: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        print("ufme-ray: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
