"""Every request to an operation leaves an audit record, whatever its outcome.

- An operation that runs (`audited`) is recorded with its outcome — refusals by the domain (a
  failed gate, an unknown subject) and unexpected errors included — before the answer leaves; a
  record that cannot be written fails the request (503).
- A change (enrol, erase, demo load) is recorded as an intent before it runs, so a change that
  became durable always has a record, even when the record of its answer then cannot be written.
- A request refused before its operation ran (401, 403, a body that does not parse or is too
  large) is recorded by the error handlers (`audit_refusal`), aggregated under a flood
  (`orchestration.refusals`).
"""

# No `from __future__ import annotations`: see dependencies.py (closures shipped to the replica).
import logging
import time
import uuid
from typing import Awaitable, Callable, TypeVar

from fastapi import Request

from ufme_ray.audit import AuditRecord
from ufme_ray.orchestration.errors import AuditUnavailableError
from ufme_ray.serving.api.dependencies import Services, installed_services, presented_key
from ufme_ray.serving.api.errors import status_for

logger = logging.getLogger(__name__)

Result = TypeVar("Result")

# Route (endpoint function name) -> the operation its records name; routes absent here (health,
# docs) are not operations on faces or the trail and are not audited.
OPERATIONS = {
    "enrol_face": "enrol",
    "enrol_face_in_gallery": "enrol",
    "get_subject": "read_subject",
    "get_subject_in_gallery": "read_subject",
    "erase_subject": "delete",
    "erase_subject_in_gallery": "delete",
    "list_subjects": "list_subjects",
    "identify": "identify",
    "identify_in_gallery": "identify",
    "verify": "verify",
    "verify_in_gallery": "verify",
    "analyze": "analyze",
    "gallery_status": "gallery_read",
    "demo_load": "demo_load",
    "audit_trail": "audit_read",
    "create_gallery": "gallery_create",
    "list_galleries": "gallery_list",
    "get_gallery": "gallery_show",
    "update_gallery": "gallery_update",
    "delete_gallery": "gallery_delete",
    "get_import": "import_read",
    "list_imports": "import_list",
    "compaction_status": "compaction_read",
    "stage_sessions": "stages_read",
    "get_own_key": "key_read",
}
CHANGES = frozenset({"enrol", "delete", "demo_load", "gallery_create", "gallery_update", "gallery_delete"})


def request_id(request: Request) -> str:
    """The client's X-Request-Id (printable, at most 64 characters) or one made up; one per request."""
    known = getattr(request.state, "request_id", None)
    if known is None:
        given = request.headers.get("x-request-id", "")
        known = given[:64] if given.isprintable() and given else uuid.uuid4().hex
        request.state.request_id = known
    return known


def _key_id(request: Request) -> str:
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return principal.key_id
    # Never the presented secret itself: only whether one came.
    return "unknown-key" if presented_key(request) else "anonymous"


def _fields(request: Request, services: Services, operation: str, subject_ids: list[str], galleries: list[str]) -> dict:
    return {
        "request_id": request_id(request),
        "key_id": _key_id(request),
        "operation": operation,
        "subject_ids": list(subject_ids),
        "galleries": list(galleries),
        "thresholds": services.engine.thresholds.as_dict(),
        "client": request.client.host if request.client else None,
    }


async def audited(
    request: Request,
    services: Services,
    operation: str,
    action: Callable[[], Awaitable[Result]],
    *,
    subject_ids: list[str] | None = None,
    galleries: list[str] | None = None,
    summarize: Callable[[Result], dict] | None = None,
) -> Result:
    """Run `action` with its audit records: the intent before a change, the outcome before the answer."""
    fields = _fields(request, services, operation, subject_ids or [], galleries or [])
    if operation in CHANGES:
        await services.audit.record(AuditRecord(time=time.time(), outcome="pending", phase="intent", **fields))
    try:
        result = await action()
    except Exception as exc:
        status = status_for(exc)
        code = getattr(exc, "code", None) or ("internal_error" if status == 500 else "refused")
        request.state.audited = True
        await services.audit.record(AuditRecord(time=time.time(), outcome=str(status), detail=code, **fields))
        raise
    extra = summarize(result) if summarize is not None else {}
    fields["subject_ids"] = sorted(set(fields["subject_ids"]) | set(extra.pop("subject_ids", [])))
    # The status the route answers with (201 for an enrolment); FastAPI's default is 200.
    status = getattr(request.scope.get("route"), "status_code", None) or 200
    request.state.audited = True
    await services.audit.record(AuditRecord(time=time.time(), outcome=str(status), **fields, **extra))
    return result


async def audit_refusal(request: Request, status: int, code: str) -> None:
    """Record a request to an operation that was refused before the operation ran (or failed
    outside it). Its answer is already decided, so a record that cannot be written is logged."""
    services = getattr(request.state, "services", None) or installed_services()
    route = request.scope.get("route")
    operation = OPERATIONS.get(getattr(route, "name", ""))
    if services is None or operation is None or getattr(request.state, "audited", False):
        return
    request.state.audited = True
    about = [request.path_params["subject_id"]] if "subject_id" in request.path_params else []
    galleries = [request.path_params["gallery_id"]] if "gallery_id" in request.path_params else []
    fields = _fields(request, services, operation, about, galleries)
    record = AuditRecord(time=time.time(), outcome=str(status), detail=code, **fields)
    try:
        if status >= 500:
            await services.audit.record(record)
        else:
            await services.audit.refusal(record)
    except AuditUnavailableError:
        logger.error("the audit record of a refused %s request (%d %s) could not be written", operation, status, code)
