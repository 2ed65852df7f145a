"""Reports record how they were made without this machine's folders in them."""

from __future__ import annotations

import os


def portable(value: object) -> str:
    """An absolute path as seen from the working directory (`../shared/...`); anything else as str()."""
    text = str(value)
    return os.path.relpath(text) if os.path.isabs(text) else text
