"""One object store under one URI, on `pyarrow.fs`.

`file:///path` is the embedded default; `s3://bucket/prefix?endpoint_override=host:port&scheme=http
&region=…` reaches any S3-compatible store, with credentials from the standard AWS environment
variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).

Invariants every caller may rely on:
- Keys are relative, '/'-separated paths under the root of the URI.
- `write` is write-once and durable: it refuses an existing key (`ObjectExistsError`) and returns
  only once the object is complete and durable (file://: data fsync'd, published with an exclusive
  hard link, parent folders fsync'd; s3://: a completed PUT). A reader never sees a partial object
  written by `write` or `write_file`.
- `replace` is the one mutable operation, for small pointer objects (`CURRENT`): an atomic
  whole-object overwrite (a PUT on S3, write-to-temp + `os.replace` locally).

On S3 the write-once check is an existence probe before the PUT (S3 through pyarrow has no
conditional PUT): callers that need exclusivity against a concurrent writer use unique keys and
the fencing protocol of the event log, not this check.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

logger = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_COPY_CHUNK_BYTES = 8 << 20


class StorageError(RuntimeError):
    """An object-store operation failed; the message names the URI and key."""


class ObjectExistsError(StorageError):
    """`write` was given a key that already holds an object (objects are write-once)."""


class ObjectNotFoundError(StorageError):
    """`read` was given a key that holds no object."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"object key {key!r} must be a relative path without empty, '.' or '..' parts")
    if any(p.startswith(_TMP_PREFIX) for p in parts):
        raise ValueError(f"object key {key!r} uses the reserved prefix {_TMP_PREFIX!r}")
    return key


class ObjectStore:
    """Durable, write-once objects under the root of one storage URI. Thread-safe."""

    def __init__(self, uri: str, fs: pafs.FileSystem, root: str, *, local: bool) -> None:
        self._uri = uri
        self._fs = fs
        self._root = root.rstrip("/")
        self._local = local

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def is_local(self) -> bool:
        return self._local

    def _path(self, key: str) -> str:
        return f"{self._root}/{_check_key(key)}"

    def exists(self, key: str) -> bool:
        try:
            info = self._fs.get_file_info(self._path(key))
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self._uri}: cannot stat {key!r}: {exc}") from exc
        return info.type == pafs.FileType.File

    def write(self, key: str, data: bytes) -> None:
        """Store `data` under the new key `key`; returns once it is durable.

        Raises ObjectExistsError if the key is taken, StorageError if the store fails.
        """
        if self._local:
            self._local_publish(key, lambda out: out.write(data))
            return
        self._refuse_existing(key)
        try:
            with self._fs.open_output_stream(self._path(key)) as out:
                out.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self._uri}: cannot write {key!r}: {exc}") from exc

    def write_file(self, key: str, source: str | Path) -> str:
        """Stream the local file `source` into the new key `key`; returns its sha256 (hex).

        Same guarantees as `write`; memory use is one copy buffer, whatever the file size.
        """
        digest = hashlib.sha256()

        def copy(out) -> None:
            with open(source, "rb") as src:
                while chunk := src.read(_COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)

        if self._local:
            self._local_publish(key, copy)
            return digest.hexdigest()
        self._refuse_existing(key)
        try:
            with self._fs.open_output_stream(self._path(key)) as out:
                copy(out)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self._uri}: cannot write {key!r}: {exc}") from exc
        return digest.hexdigest()

    def replace(self, key: str, data: bytes) -> None:
        """Atomically overwrite (or create) the small pointer object `key`; durable on return."""
        if not self._local:
            try:
                with self._fs.open_output_stream(self._path(key)) as out:
                    out.write(data)
            except (OSError, pa.ArrowException) as exc:
                raise StorageError(f"{self._uri}: cannot write {key!r}: {exc}") from exc
            return
        final = Path(self._path(key))
        self._local_mkdirs(final.parent)
        tmp = final.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"{self._uri}: cannot replace {key!r}: {exc}") from exc

    def read(self, key: str) -> bytes:
        """The whole object. Raises ObjectNotFoundError if there is none."""
        return self.read_head(key, None)

    def read_head(self, key: str, size: int | None) -> bytes:
        """The object's first `size` bytes (fewer if it is shorter; None: all). Raises ObjectNotFoundError."""
        try:
            with self._fs.open_input_stream(self._path(key)) as src:
                return src.read(size)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{self._uri}: no object {key!r}") from exc
        except (OSError, pa.ArrowException) as exc:
            if not self.exists(key):
                raise ObjectNotFoundError(f"{self._uri}: no object {key!r}") from exc
            raise StorageError(f"{self._uri}: cannot read {key!r}: {exc}") from exc

    def read_to_file(self, key: str, target: str | Path) -> str:
        """Stream the object into the local file `target` (created or truncated); returns its sha256."""
        digest = hashlib.sha256()
        try:
            with self._fs.open_input_stream(self._path(key)) as src, open(target, "wb") as out:
                while chunk := src.read(_COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(f"{self._uri}: no object {key!r}") from exc
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self._uri}: cannot read {key!r}: {exc}") from exc
        return digest.hexdigest()

    def list(self, prefix: str) -> list[str]:
        """Keys of the objects under the folder `prefix` ("" for all), recursive, sorted. Missing: []."""
        folder = prefix.rstrip("/")
        base = self._path(folder) if folder else self._root
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        try:
            infos = self._fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self._uri}: cannot list {prefix!r}: {exc}") from exc
        keys = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            key = info.path[len(self._root) + 1 :]
            # A crash between writing and publishing leaves a temporary file; it is no object.
            if not any(part.startswith(_TMP_PREFIX) for part in key.split("/")):
                keys.append(key)
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> None:
        """Delete the objects; keys that hold nothing are ignored. Durable on return."""
        folders: set[Path] = set()
        for key in keys:
            path = self._path(key)
            try:
                self._fs.delete_file(path)
            except FileNotFoundError:
                continue
            except (OSError, pa.ArrowException) as exc:
                if self.exists(key):
                    raise StorageError(f"{self._uri}: cannot delete {key!r}: {exc}") from exc
                continue
            if self._local:
                folders.add(Path(path).parent)
        for folder in folders:
            _fsync_dir(folder)

    def _refuse_existing(self, key: str) -> None:
        if self.exists(key):
            raise ObjectExistsError(f"{self._uri}: object {key!r} already exists (objects are write-once)")

    def _local_publish(self, key: str, fill) -> None:
        # Write a private temporary file, fsync it, then publish it with link(): link is atomic and
        # fails if the name exists, so readers never see a partial object and a key is never
        # overwritten. Then fsync the folder so the new name itself survives a power loss.
        final = Path(self._path(key))
        self._local_mkdirs(final.parent)
        tmp = final.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError as exc:
                raise ObjectExistsError(
                    f"{self._uri}: object {key!r} already exists (objects are write-once)"
                ) from exc
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(f"{self._uri}: cannot write {key!r}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _local_mkdirs(self, folder: Path) -> None:
        # Create missing folders top-down, fsyncing each parent so a new folder's entry is durable.
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue
            _fsync_dir(new.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_storage(uri: str) -> ObjectStore:
    """Open the object store at `uri` (file:///… or s3://bucket/prefix?endpoint_override=…).

    Raises ValueError for another scheme or a malformed URI, StorageError if the store can't be
    reached.
    """
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise ValueError(f"storage URI {uri!r}: file:// URIs take an absolute path and no query")
        root = Path(parts.path)
        if not root.is_absolute():
            raise ValueError(f"storage URI {uri!r}: file:// needs an absolute path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create storage folder {root}: {exc}") from exc
        return ObjectStore(uri, pafs.LocalFileSystem(), str(root), local=True)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"storage URI {uri!r}: s3:// needs a bucket")
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot open storage {uri!r}: {exc}") from exc
        return ObjectStore(uri, fs, root, local=False)
    raise ValueError(f"storage URI {uri!r} must start with file:// or s3://")

