"""The bulk import Ray Job: `python -m ufme_ray.jobs.imports --source … --gallery … --import-id …`.

A Ray Data pipeline: the source's photos (`jobs.import_source`) -> read the bytes and their
sha256 -> on an actor pool, each actor holding every model once, the Engine's own enrolment
(`orchestration.engine.Engine` over `PipelineStages`: decode with the image limits, detect, the
gates the capture type enforces, embed, the gallery's duplicate check through the enrolment
sequencer, the write to the owning shard through the Searcher) -> one outcome per photo.

Exactly once: each photo is enrolled under the request key of (import id, subject, sha256 of its
bytes). A rerun of the same import id (after the job was killed, an actor died, `ray job stop`)
finds the photos already enrolled by the shards' request ledgers and adds none twice.

The job writes its state and counts to `imports/<id>/state.json` as it goes, the per-photo report
to `imports/<id>/report.parquet` at the end, and one audit record for the whole import. Settings
come from UFME_IMPORT_SETTINGS (the submitter's, as the replicas get theirs) else the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as papq
import ray
import ray.data
from ray import serve

from ufme_ray.audit import AuditRecord, AuditWriter, SubjectPseudonyms
from ufme_ray.config import UfmeSettings
from ufme_ray.gallery.encryption import open_configured_storage
from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN
from ufme_ray.jobs.import_source import list_source, read_photo
from ufme_ray.jobs.logs import configure_logging
from ufme_ray.orchestration import errors as domain
from ufme_ray.orchestration.engine import Engine, Idempotency, Intake
from ufme_ray.orchestration.imports import REPORT_COLUMNS, ImportState, read_state, report_key, write_state
from ufme_ray.orchestration.local_stages import PipelineStages
from ufme_ray.serving.handles import GalleryHandle
from ufme_ray.serving.metrics import ServiceMetrics
from ufme_ray.serving.shard_calls import ShardDirectory
from ufme_ray.vision.errors import ImageError, ImageTooLargeError
from ufme_ray.vision.pipeline import NoFaceError, Pipeline

logger = logging.getLogger("ufme_ray.jobs.imports")

SETTINGS_ENV = "UFME_IMPORT_SETTINGS"
STATE_EVERY_S = 2.0


def _read(uri: str, max_bytes: int) -> tuple[bytes, str, str, str]:
    try:
        raw = read_photo(uri, max_bytes)
    except OSError as exc:
        return b"", "", "unreadable", str(exc)[:200]
    return raw, hashlib.sha256(raw).hexdigest(), "", ""


def read_photos(batch: dict, max_bytes: int) -> dict:
    """Bytes and sha256 of each photo; an unreadable one gets its outcome here."""
    data, digests, status, detail = zip(*(_read(str(uri), max_bytes) for uri in batch["uri"]))
    return {**batch, "data": list(data), "sha256": list(digests), "status": list(status), "detail": list(detail)}


class EnrolPhotos:
    """One scoring actor of the pool: the Engine over in-process models, writing through the Searcher."""

    def __init__(self, settings_json: str, gallery_id: str, import_id: str, capture: str, quality_filter: str | None):
        settings = UfmeSettings.model_validate_json(settings_json)
        searcher = serve.get_deployment_handle("Searcher", app_name=settings.imports.app_name)
        gallery = GalleryHandle(searcher, ShardDirectory(settings.gallery.num_shards))
        self._engine = Engine(settings, PipelineStages(Pipeline.from_settings(settings)), gallery, ServiceMetrics())
        self._gallery, self._import_id = gallery_id, import_id
        self._intake = Intake(capture, quality_filter)
        self._loop = asyncio.new_event_loop()

    def __call__(self, batch: dict) -> dict:
        outcomes = [self._one(*row) for row in zip(batch["subject_id"], batch["data"], batch["sha256"], batch["status"], batch["detail"])]
        columns = {name: [o[name] for o in outcomes] for name in ("status", "detail", "score", "threshold", "duplicate_of", "template_id")}
        return {"subject_id": batch["subject_id"], "uri": batch["uri"], "sha256": batch["sha256"], **columns}

    def _one(self, subject_id: str, data: bytes, sha256: str, status: str, detail: str) -> dict:
        outcome = {"status": status, "detail": detail, "score": None, "threshold": None, "duplicate_of": None, "template_id": None}
        if status:
            return outcome
        key = Idempotency(f"import:{self._import_id}", f"{subject_id}/{sha256}")
        try:
            enrolled = self._loop.run_until_complete(
                self._engine.enrol(str(subject_id), bytes(data), gallery_id=self._gallery, intake=self._intake, idempotency=key)
            )
            return {**outcome, "status": "enrolled", "template_id": enrolled.template_id}
        except domain.GateRejectedError as exc:
            gate = exc.face.gates[exc.failed[0]]
            return {**outcome, "status": "refused", "detail": exc.code, "score": gate.score, "threshold": gate.threshold}
        except domain.DuplicateFaceError as exc:
            return {**outcome, "status": "duplicate", "duplicate_of": exc.details.get("subject_id"), "score": exc.details.get("score")}
        except domain.MultipleFacesError as exc:
            return {**outcome, "status": "multiple_faces", "detail": exc.message[:200]}
        except NoFaceError:
            return {**outcome, "status": "no_face"}
        except ImageTooLargeError as exc:
            return {**outcome, "status": "too_large", "detail": str(exc)[:200]}
        except ImageError as exc:
            return {**outcome, "status": "unreadable", "detail": f"{exc.code}: {exc}"[:200]}
        except domain.GalleryUnavailableError as exc:
            return {**outcome, "status": "unavailable", "detail": str(exc)[:200]}  # a rerun enrols it
        except domain.DomainError as exc:
            return {**outcome, "status": "refused", "detail": exc.code}


def run_import(settings: UfmeSettings, *, source: str, gallery_id: str, import_id: str, capture: str,
               quality_filter: str | None, submitted_by: str) -> ImportState:
    store = open_configured_storage(settings)
    photos = list_source(source)
    state = ImportState(import_id=import_id, gallery_id=gallery_id, source=source, capture=capture, total=len(photos))
    write_state(store, state)
    invalid = [p for p in photos if not re.fullmatch(SUBJECT_ID_PATTERN, p["subject_id"])]
    valid = [p for p in photos if re.fullmatch(SUBJECT_ID_PATTERN, p["subject_id"])]
    rows: list[dict] = [
        {"subject_id": p["subject_id"], "uri": p["uri"], "sha256": "", "status": "invalid_subject_id", "detail": "",
         "score": None, "threshold": None, "duplicate_of": None, "template_id": None}
        for p in invalid
    ]
    counts = Counter(row["status"] for row in rows)
    if valid:
        dataset = (
            ray.data.from_items(valid, override_num_blocks=max(1, min(len(valid) // settings.imports.batch_size, 200)))
            .map_batches(
                read_photos, fn_kwargs={"max_bytes": settings.image.max_bytes}, batch_size=settings.imports.batch_size,
                num_cpus=settings.imports.task_num_cpus,
            )
            .map_batches(
                EnrolPhotos,
                fn_constructor_kwargs={
                    "settings_json": settings.transport_json(), "gallery_id": gallery_id, "import_id": import_id,
                    "capture": capture, "quality_filter": quality_filter,
                },
                batch_size=settings.imports.batch_size,
                concurrency=settings.imports.concurrency,
                num_cpus=settings.imports.actor_num_cpus,
            )
        )
        written = time.monotonic()
        for batch in dataset.iter_batches(batch_size=settings.imports.batch_size, batch_format="pyarrow"):
            batch_rows = batch.to_pylist()
            rows += batch_rows
            counts.update(row["status"] for row in batch_rows)
            if time.monotonic() - written > STATE_EVERY_S:
                write_state(store, state.model_copy(update={"counts": dict(counts)}))
                written = time.monotonic()
    table = pa.Table.from_pylist([{name: row.get(name) for name in REPORT_COLUMNS} for row in rows])
    sink = io.BytesIO()
    papq.write_table(table, sink)
    store.replace(report_key(import_id), sink.getvalue())
    state = state.model_copy(update={"counts": dict(counts), "state": "done", "finished_at": time.time(), "report": report_key(import_id)})
    write_state(store, state)
    pseudonyms = SubjectPseudonyms.from_settings(settings.audit)
    record = AuditRecord(
        time=time.time(), request_id=f"import-{import_id}", key_id=submitted_by, operation="import", outcome="done",
        galleries=[gallery_id],
        decisions=[{"source": source, "capture": capture, "total": state.total, "counts": dict(counts), "report": state.report}],
    )
    asyncio.run(AuditWriter(store).record(pseudonyms.record(record)))
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bulk import of a photo collection into a gallery (a Ray Job).")
    parser.add_argument("--source", required=True)
    parser.add_argument("--gallery", required=True)
    parser.add_argument("--import-id", required=True)
    parser.add_argument("--capture", choices=["live", "stored"], default="stored")
    parser.add_argument("--quality-filter", choices=["none", "low", "medium", "high", "auto"])
    parser.add_argument("--submitted-by", default="cli")
    args = parser.parse_args(argv)
    configure_logging()
    given = os.environ.get(SETTINGS_ENV)
    settings = UfmeSettings.model_validate_json(given) if given else UfmeSettings.load()
    ray.init(address="auto", log_to_driver=False)
    try:
        state = run_import(
            settings, source=args.source, gallery_id=args.gallery, import_id=args.import_id, capture=args.capture,
            quality_filter=args.quality_filter, submitted_by=args.submitted_by,
        )
    except Exception as exc:
        logger.exception("import %s failed", args.import_id)
        store = open_configured_storage(settings)
        failed = read_state(store, args.import_id)
        if failed is not None:
            write_state(store, failed.model_copy(update={"state": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}))
        print(json.dumps({"import_summary": {"state": "failed", "error": str(exc)[:500]}}))
        return 1
    print(json.dumps({"import_summary": state.model_dump()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
