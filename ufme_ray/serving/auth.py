"""API keys with roles, the galleries they may use and their quotas: keys are stored and compared
as sha256 digests, in constant time.

A key reads `ufme.<id>.<secret>`: the id is public (audit records name it), the secret is 32
random bytes. Only sha256(key) is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter

from ufme_ray.config import ApiKeySpec, AuthSettings, Capture, Role
from ufme_ray.orchestration.ratelimit import RateLimit

# Which roles may call an operation group; admin may call everything.
ROLE_GRANTS: dict[str, set[Role]] = {
    "enrol": {"admin", "enrol"},  # enrol, delete, read subjects
    "search": {"admin", "search"},  # identify, verify, analyze
    "admin": {"admin"},  # gallery status, demo load, audit
    "self": {"admin", "enrol", "search"},  # who the key is: its role, galleries, capture types
}

_KEYS = TypeAdapter(list[ApiKeySpec])


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: Role
    galleries: frozenset[str] | None = None  # None: every gallery ("*")
    rate: RateLimit | None = None  # None: no quota
    captures: tuple[Capture, ...] | None = None  # None: any capture type ("*")

    @classmethod
    def of(cls, spec: ApiKeySpec) -> "Principal":
        galleries = None if spec.galleries == "*" else frozenset(spec.galleries)
        captures = None if spec.captures == "*" else tuple(dict.fromkeys(spec.captures))
        return cls(spec.id, spec.role, galleries, RateLimit.of(spec.rate, spec.burst), captures)

    def may_use(self, gallery_id: str) -> bool:
        return self.galleries is None or gallery_id in self.galleries

    def capture(self, declared: Capture | None) -> Capture | None:
        """The capture type a request is served with: the one it declares (AuthError 403 if the key
        may not declare it), else the key's only one, else None (the gallery's policy decides)."""
        if declared is not None:
            if self.captures is not None and declared not in self.captures:
                raise AuthError(403, "forbidden", f"the key {self.key_id!r} may not declare capture {declared!r}")
            return declared
        return self.captures[0] if self.captures is not None and len(self.captures) == 1 else None


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(key_id: str) -> str:
    return f"ufme.{key_id}.{secrets.token_urlsafe(32)}"


class KeyStore:
    """The configured keys (inline plus the keys file, re-read when the file changes)."""

    _RECHECK_S = 1.0

    def __init__(self, settings: AuthSettings):
        self._inline = list(settings.keys)
        self._file = settings.keys_file
        self._lock = threading.Lock()
        self._file_keys: list[ApiKeySpec] = []
        self._file_mtime: float | None = None
        self._checked = 0.0
        self._refresh(force=True)

    def _refresh(self, *, force: bool = False) -> None:
        if self._file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < self._RECHECK_S:
            return
        with self._lock:
            self._checked = now
            try:
                mtime = self._file.stat().st_mtime
            except FileNotFoundError:
                self._file_keys, self._file_mtime = [], None
                return
            if mtime != self._file_mtime:
                self._file_keys = _KEYS.validate_json(self._file.read_bytes())
                self._file_mtime = mtime

    def authenticate(self, presented: str | None) -> Principal:
        """The principal for a presented key; AuthError 401 if absent or unknown."""
        if not presented:
            raise AuthError(401, "unauthenticated", "an API key is required: `Authorization: Bearer <key>` or `X-API-Key`")
        self._refresh()
        digest = key_digest(presented)
        match = None
        # Compare against every key, always, so timing says nothing about which key nearly matched.
        for spec in self._inline + self._file_keys:
            if hmac.compare_digest(digest, spec.sha256):
                match = spec
        if match is None:
            raise AuthError(401, "unauthenticated", "the API key is not valid")
        return Principal.of(match)


def authorize(principal: Principal, group: str) -> None:
    if principal.role not in ROLE_GRANTS[group]:
        raise AuthError(403, "forbidden", f"the key {principal.key_id!r} (role {principal.role}) may not call {group} operations")


def authorize_gallery(principal: Principal, gallery_id: str) -> None:
    if not principal.may_use(gallery_id):
        raise AuthError(403, "forbidden", f"the key {principal.key_id!r} may not use gallery {gallery_id!r}")


def read_keys_file(path: Path) -> list[ApiKeySpec]:
    """The keys a keys file holds (none if it does not exist); a key stored without galleries or a
    quota (written before they existed) may use every gallery, without a quota."""
    return _KEYS.validate_json(path.read_bytes()) if path.exists() else []


def add_key_to_file(path: Path, key_id: str, role: Role, *, galleries: list[str] | None = None,
                    rate: float | None = None, burst: int | None = None, captures: list[Capture] | None = None) -> str:
    """Create a key, store its digest in the keys file (mode 0600), return the key (shown once).
    `galleries` / `captures` None: every gallery / capture type. Raises ValueError for a taken id or
    an invalid field."""
    existing = read_keys_file(path)
    if any(spec.id == key_id for spec in existing):
        raise ValueError(f"a key with id {key_id!r} already exists in {path}")
    key = new_key(key_id)
    spec = ApiKeySpec(
        id=key_id, role=role, sha256=key_digest(key), galleries="*" if galleries is None else galleries, rate=rate, burst=burst,
        captures="*" if captures is None else captures,
    )
    existing.append(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        # Fields at their defaults left out: a key without galleries or a quota stays readable by a
        # service older than those fields (its settings forbid unknown keys).
        handle.write(json.dumps([spec.model_dump(exclude_defaults=True) for spec in existing], indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    return key


def write_secret_file(path: Path, secret: str) -> None:
    """Write a key for the CLI to pick up, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    os.chmod(path, 0o600)
