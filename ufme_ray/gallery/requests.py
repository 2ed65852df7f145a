"""Request keys: an enrolment retried under the same key finds its first template instead of adding one.

A request key is 32 bytes: 16 naming the request (a hash of who sent it and their Idempotency-Key)
and 16 fingerprinting what it asked for (a hash of the subject id and the image). The key travels in
the enrolment's event, so a shard restored from its log and snapshot knows every key it has
acknowledged. A key is forgotten when its template is erased: erasure leaves nothing behind that
names the subject's requests, and a retry after it enrols anew.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

NAME_BYTES = 16


class RequestKeyReusedError(ValueError):
    """The request key was acknowledged before for a different request (another subject or image)."""


class Acknowledged(NamedTuple):
    template_id: int
    seq: int


def request_name(request: bytes) -> bytes:
    return request[:NAME_BYTES]


class RequestLedger:
    """Which request keys a shard has acknowledged, and which are being written now.

    `claim` holds the keys of a batch while it is appended: a concurrent enrolment under one of
    them waits, then finds the first one's template.
    """

    def __init__(self) -> None:
        self._acknowledged: dict[bytes, tuple[bytes, Acknowledged]] = {}
        self._name_of_template: dict[int, bytes] = {}
        self._writing: set[bytes] = set()
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._acknowledged)

    def add(self, request: bytes, template_id: int, seq: int) -> None:
        """Record an applied enrolment made under `request`."""
        name = request_name(request)
        with self._changed:
            self._acknowledged[name] = (request, Acknowledged(template_id, seq))
            self._name_of_template[template_id] = name

    def forget(self, template_ids: Iterable[int]) -> None:
        """The templates were erased: their keys no longer name anything."""
        with self._changed:
            for template_id in template_ids:
                name = self._name_of_template.pop(template_id, None)
                if name is not None:
                    self._acknowledged.pop(name, None)

    def _known(self, request: bytes) -> Acknowledged | None:
        found = self._acknowledged.get(request_name(request))
        if found is None:
            return None
        first, acknowledged = found
        if first != request:
            raise RequestKeyReusedError("this Idempotency-Key was used before for a different request")
        return acknowledged

    @contextmanager
    def claim(self, requests: Sequence[bytes | None]) -> Iterator[list[Acknowledged | None]]:
        """Per request: its earlier acknowledgement, or None when it must be written now.

        While the block runs, the keys to be written are held; a request repeated within the batch
        is written once (the caller maps repeats with `repeats`). Raises RequestKeyReusedError.
        """
        names = [request_name(r) if r is not None else None for r in requests]
        with self._changed:
            while any(name in self._writing for name in names if name is not None):
                self._changed.wait()
            known = [self._known(r) if r is not None else None for r in requests]
            held = {name for name, ack in zip(names, known) if name is not None and ack is None}
            firsts: dict[bytes, bytes] = {}
            for request, name in zip(requests, names):
                if name is not None and firsts.setdefault(name, request) != request:
                    raise RequestKeyReusedError("this Idempotency-Key was used twice in one batch for different requests")
            self._writing |= held
        try:
            yield known
        finally:
            with self._changed:
                self._writing -= held
                self._changed.notify_all()


def repeats(requests: Sequence[bytes | None]) -> list[int | None]:
    """Per request: the index of an earlier request in the batch with the same key, or None."""
    first: dict[bytes, int] = {}
    found: list[int | None] = []
    for index, request in enumerate(requests):
        if request is None:
            found.append(None)
            continue
        earlier = first.setdefault(request_name(request), index)
        found.append(earlier if earlier != index else None)
    return found


def request_key(scope: str, idempotency_key: str, subject_id: str, image: bytes) -> bytes:
    """The request key of an enrolment: the caller's key named within `scope` (who sent it), and a
    fingerprint of the subject and image, so a reuse for another request is told apart."""
    name = hashlib.sha256(b"\0".join((b"name", scope.encode(), idempotency_key.encode()))).digest()[:NAME_BYTES]
    what = hashlib.sha256(b"\0".join((b"what", subject_id.encode(), hashlib.sha256(image).digest()))).digest()
    return name + what[:NAME_BYTES]
