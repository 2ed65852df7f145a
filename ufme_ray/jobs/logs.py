"""Log lines of the compaction job: the driver's and its tasks' lines end up in the job log."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Send ufme_ray's INFO lines to stderr, once per process (Ray forwards a task's to the driver)."""
    package = logging.getLogger("ufme_ray")
    if package.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
