"""A bulk import's record in object storage: its state and counts while it runs, its per-photo
report when it ends. Written by the import job (`jobs.imports`), read by the API and the CLI.

    imports/<import_id>/state.json      ImportState, rewritten as the import goes
    imports/<import_id>/report.parquet  one row per photo (REPORT_COLUMNS), written at the end
"""

from __future__ import annotations

import re
import time
from typing import Literal

from pydantic import BaseModel, Field

from ufme_ray.gallery.storage import ObjectNotFoundError, ObjectStore

IMPORT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Per photo: what happened to it. enrolled: stored now or by an earlier run of the same import.
Outcome = Literal[
    "enrolled", "refused", "duplicate", "no_face", "multiple_faces", "unreadable", "too_large", "invalid_subject_id",
    "unavailable",
]
REPORT_COLUMNS = ("subject_id", "uri", "sha256", "status", "detail", "score", "threshold", "duplicate_of", "template_id")


class ImportState(BaseModel):
    import_id: str
    gallery_id: str
    source: str
    capture: str
    state: Literal["running", "done", "failed"] = "running"
    total: int = 0
    counts: dict[str, int] = Field(default_factory=dict, description="Photos per outcome so far.")
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    report: str | None = Field(None, description="Object key of the per-photo report, once written.")
    error: str | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.values())


def check_import_id(import_id: str) -> str:
    if not re.fullmatch(IMPORT_ID_PATTERN, import_id):
        raise ValueError(f"import id {import_id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return import_id


def state_key(import_id: str) -> str:
    return f"imports/{import_id}/state.json"


def report_key(import_id: str) -> str:
    return f"imports/{import_id}/report.parquet"


def write_state(store: ObjectStore, state: ImportState) -> None:
    store.replace(state_key(state.import_id), state.model_dump_json().encode())


def read_state(store: ObjectStore, import_id: str) -> ImportState | None:
    try:
        return ImportState.model_validate_json(store.read(state_key(import_id)))
    except ObjectNotFoundError:
        return None


def list_states(store: ObjectStore) -> list[ImportState]:
    """Every import's state, newest first (by start time, then id)."""
    states = []
    for key in store.list("imports"):
        import_id, _, name = key.removeprefix("imports/").partition("/")
        # An import removed between the listing and the read is simply not listed.
        if name == "state.json" and (state := read_state(store, import_id)) is not None:
            states.append(state)
    return sorted(states, key=lambda s: (-s.started_at, s.import_id))
