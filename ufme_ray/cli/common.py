"""What the subcommand modules share: the exit codes, a command's settings, the wrong-use error."""

from __future__ import annotations

import argparse
from typing import Any

from ufme_ray.config import UfmeSettings

EXIT_OK = 0
EXIT_FAILED = 1  # the work failed, or what it talks to refused or could not be reached
EXIT_USAGE = 2  # wrong arguments, settings or model files (argparse uses 2 for its errors too)
EXIT_ALREADY_RAN = 3  # compact: the slot's job had already ended; nothing new was compacted
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


class UsageError(Exception):
    """The command cannot do what it was asked (e.g. a key id that exists, a missing folder)."""


def load_settings(args: argparse.Namespace, **overrides: Any) -> UfmeSettings:
    """--config, the UFME_* environment, --model-dir and `overrides`. Raises ConfigError."""
    if getattr(args, "model_dir", None):
        overrides["model_dir"] = args.model_dir
    return UfmeSettings.load(args.config, **overrides)


def say(line: str) -> None:
    """One progress line, at once (a log follows, or a bar on stderr)."""
    print(line, flush=True)
