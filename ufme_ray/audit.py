"""The audit trail: append-only JSON-lines objects in the same object storage as the gallery.

Each writer (one per gateway replica) group-commits the records that arrive within a short
window into one write-once object `audit/<YYYY-MM-DD>/<time_ns>-<writer>-<n>.jsonl`, whose last
line is the sha256 of the lines before it; `record()` returns only once that object is durable.
Records never hold images, vectors or API keys — only key ids, subject ids, scores, decisions.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ufme_ray.gallery.storage import ObjectStore

logger = logging.getLogger(__name__)

PREFIX = "audit"
Operation = Literal[
    "enrol", "delete", "identify", "verify", "analyze", "demo_load", "read_subject", "list_subjects", "audit_read",
    "gallery_read", "gallery_create", "gallery_update", "gallery_delete", "gallery_list", "gallery_show", "import",
    "import_read", "import_list", "compaction_read", "key_read", "stages_read",
]


class AuditRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time: float = Field(description="Unix time (s) the request was answered.")
    request_id: str
    key_id: str
    operation: Operation
    outcome: str = Field(description="HTTP status code of the answer.")
    subject_ids: list[str] = Field(default_factory=list)
    galleries: list[str] = Field(default_factory=list, description="The galleries the request acted in.")
    decisions: list[dict[str, Any]] = Field(default_factory=list, description="Per face: decision, scores.")
    thresholds: dict[str, float | None] = Field(default_factory=dict)
    gallery_epochs: list[int] = Field(default_factory=list)
    client: str | None = None
    detail: str | None = None
    phase: Literal["intent", "answer"] = Field(
        "answer",
        description="intent: written before a change runs (outcome 'pending'), so that every durable change has a "
        "record even when its answer's record cannot be written; answer: the request's outcome.",
    )
    count: int = Field(1, ge=1, description="Refusals aggregated into this record (see `orchestration.refusals`).")
    first_time: float | None = Field(None, description="For an aggregate: when the first of its refusals came.")


class CorruptAuditObjectError(RuntimeError):
    pass


class SubjectPseudonyms:
    """Maps subject ids to what audit records store: a keyed HMAC, or the id itself without a key."""

    def __init__(self, key: bytes | None):
        if key is not None and len(key) < 32:
            raise ValueError("the audit subject key must be at least 32 bytes")
        self._key = key

    @classmethod
    def from_settings(cls, settings) -> "SubjectPseudonyms":
        """The pseudonyms of `settings` (AuditSettings). Raises ConfigError when no key is configured
        and plain subject ids are not explicitly allowed, or when the key is unreadable or too short."""
        from ufme_ray.config import ConfigError

        encoded, source = None, None
        if settings.subject_key is not None:
            encoded, source = settings.subject_key.get_secret_value().strip(), "audit.subject_key"
        elif settings.subject_key_file is not None:
            source = f"audit.subject_key_file {settings.subject_key_file}"
            try:
                encoded = Path(settings.subject_key_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {source}: {exc}") from exc
        if not encoded:
            if settings.allow_plain_subject_ids:
                return cls(None)
            problem = f"{source} is empty" if source else "no audit subject key is configured"
            raise ConfigError(
                f"{problem}: audit records would store raw subject ids, which stay in the trail after the subject is "
                "erased. Set audit.subject_key (env UFME_AUDIT__SUBJECT_KEY: base64 of at least 32 random bytes, e.g. "
                "`head -c 32 /dev/urandom | base64`) or audit.subject_key_file (a file holding it), or allow plain "
                "ids explicitly with audit.allow_plain_subject_ids=true (env UFME_AUDIT__ALLOW_PLAIN_SUBJECT_IDS=true)"
            )
        try:
            key = base64.b64decode("".join(encoded.split()), validate=True)
        except ValueError as exc:
            raise ConfigError(f"{source} is not valid base64: {exc}") from None
        if len(key) < 32:
            raise ConfigError(f"{source} decodes to {len(key)} bytes; the audit subject key must be at least 32 bytes")
        return cls(key)

    def __call__(self, subject_id: str) -> str:
        if self._key is None:
            return subject_id
        return "hmac:" + hmac.new(self._key, subject_id.encode(), hashlib.sha256).hexdigest()[:32]

    def record(self, record: "AuditRecord") -> "AuditRecord":
        """The record with every subject id (ids list, decision fields) replaced by its pseudonym."""
        decisions = [
            {k: self(v) if k in ("subject_id", "duplicate_of") and isinstance(v, str) else v for k, v in d.items()}
            for d in record.decisions
        ]
        return record.model_copy(update={"subject_ids": [self(s) for s in record.subject_ids], "decisions": decisions})


def _day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d")


def encode_batch(records: list[AuditRecord]) -> bytes:
    body = b"".join(record.model_dump_json().encode() + b"\n" for record in records)
    return body + json.dumps({"sha256": hashlib.sha256(body).hexdigest()}).encode() + b"\n"


def decode_batch(key: str, data: bytes) -> list[AuditRecord]:
    body, _, trailer = data.rstrip(b"\n").rpartition(b"\n")
    body = body + b"\n" if body else b""
    try:
        expected = json.loads(trailer)["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptAuditObjectError(f"audit object {key} has no checksum line") from exc
    if hashlib.sha256(body).hexdigest() != expected:
        raise CorruptAuditObjectError(f"audit object {key} fails its checksum")
    return [AuditRecord.model_validate_json(line) for line in body.splitlines() if line]


class AuditWriter:
    """Group-commits records from concurrent requests; `record` returns once durable.

    No waiting window: a record that finds no write in flight is written at once (a request alone
    pays one write, not a window on top), and the records that arrive while a write is in flight
    share the next one, so under load one object holds as many records as came in meanwhile.
    """

    def __init__(self, store: ObjectStore):
        self._store = store
        self._writer = uuid.uuid4().hex[:12]
        self._count = 0
        self._pending: list[tuple[AuditRecord, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def record(self, record: AuditRecord) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self._count += 1
            key = f"{PREFIX}/{_day(batch[0][0].time)}/{time.time_ns():020d}-{self._writer}-{self._count:08d}.jsonl"
            try:
                await asyncio.to_thread(self._store.write, key, encode_batch([record for record, _ in batch]))
            except Exception as exc:  # every waiting request learns its record was not stored
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)


def read_records(
    store: ObjectStore,
    *,
    since: float | None = None,
    until: float | None = None,
    operation: str | None = None,
    subject_id: str | None = None,
    gallery_id: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[AuditRecord], int]:
    """Matching records, oldest first, and the total number matching (for paging)."""
    keys = store.list(PREFIX)
    if since is not None:
        first_day = _day(since)
        keys = [k for k in keys if k.split("/")[1] >= first_day]
    if until is not None:
        last_day = _day(until)
        keys = [k for k in keys if k.split("/")[1] <= last_day]
    matched = []
    for key in keys:
        for record in decode_batch(key, store.read(key)):
            if since is not None and record.time < since:
                continue
            if until is not None and record.time > until:
                continue
            if operation is not None and record.operation != operation:
                continue
            if subject_id is not None and subject_id not in record.subject_ids:
                continue
            if gallery_id is not None and gallery_id not in record.galleries:
                continue
            matched.append(record)
    matched.sort(key=lambda r: (r.time, r.request_id))
    return matched[offset : offset + limit], len(matched)
