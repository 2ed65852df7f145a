"""Refused requests in the audit trail without a flood growing it without bound.

A request refused before its operation ran (no key, a key without the role, a body that does
not parse, an upload too large) did no biometric processing, but the trail must still show it.
Per kind of refusal (key id, client, operation, status, code), the first in a window is written
whole; the rest of that window are counted, and one aggregate record (`count`, `first_time`) is
written when the window ends. At most `max_kinds` kinds are kept apart per window; further kinds
are folded into one per (operation, status, code) with key id and client "*". So a window writes at
most 2 × (max_kinds + operations × refusal statuses × codes) records per gateway replica,
whatever the request rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ufme_ray.audit import AuditRecord

Kind = tuple[str, str | None, str, str, str | None]
OVERFLOW = "*"


@dataclass
class _Window:
    opened: float
    sample: AuditRecord
    extra: int = 0
    first_extra: float | None = None
    last_extra: float = 0.0


@dataclass
class RefusalAggregator:
    window_s: float = 60.0
    max_kinds: int = 100
    _windows: dict[Kind, _Window] = field(default_factory=dict)

    def offer(self, record: AuditRecord) -> AuditRecord | None:
        """The record to write now (the first of its kind in the window), or None (counted)."""
        kind: Kind = (record.key_id, record.client, record.operation, record.outcome, record.detail)
        if kind not in self._windows and self._distinct() >= self.max_kinds:
            kind = (OVERFLOW, OVERFLOW, record.operation, record.outcome, record.detail)
            record = record.model_copy(update={"key_id": OVERFLOW, "client": OVERFLOW, "subject_ids": []})
        window = self._windows.get(kind)
        if window is None:
            self._windows[kind] = _Window(opened=record.time, sample=record)
            return record
        window.extra += 1
        window.first_extra = record.time if window.first_extra is None else window.first_extra
        window.last_extra = record.time
        return None

    def _distinct(self) -> int:
        return sum(1 for kind in self._windows if kind[0] != OVERFLOW)

    def due(self, now: float) -> list[AuditRecord]:
        """Aggregates of the windows that have ended (their kinds start afresh)."""
        return self._close([kind for kind, window in self._windows.items() if now - window.opened >= self.window_s])

    def drain(self) -> list[AuditRecord]:
        """Aggregates of every open window, ended or not (the replica is stopping)."""
        return self._close(list(self._windows))

    def _close(self, ended: list[Kind]) -> list[AuditRecord]:
        aggregates = []
        for kind in ended:
            window = self._windows.pop(kind)
            if window.extra:
                aggregates.append(
                    window.sample.model_copy(
                        update={
                            "time": window.last_extra,
                            "first_time": window.first_extra,
                            "count": window.extra,
                            "request_id": f"aggregate-{window.sample.request_id}",
                            "subject_ids": [],
                        }
                    )
                )
        return aggregates

    def idle(self) -> bool:
        """No window open: nothing to aggregate until the next refusal."""
        return not self._windows
