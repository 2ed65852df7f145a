"""The model store: list, verify, pull and resolve the ONNX files named by the model manifest.

A model folder (`settings.model_dir`) holds files named `spec.file`; a file is trusted only when
its sha256 equals the manifest's. `pull_models` fetches from the manifest's upstream URLs or from a
mirror (`http(s)://base/`, a local folder or `file://` URI, or an object-store URI such as
`s3://bucket/prefix?endpoint_override=…`, see `sources`), and installs a file only after its
checksum matched, by an atomic rename of a temporary file in the same folder. No Ray, no FastAPI,
no exit codes: the CLI and the vision model loader call in here and decide what the outcomes mean.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from ufme_ray.models.errors import (
    ChecksumMismatchError,
    DownloadError,
    ModelCorruptError,
    ModelMissingError,
    ModelStoreError,
    NoUpstreamError,
    UnverifiableModelError,
)
from ufme_ray.models.manifest import ModelManifest, ModelSpec
from ufme_ray.models.sources import CHUNK_BYTES, Stream, mirror_url, open_source, redact

logger = logging.getLogger(__name__)

ModelState = Literal["ok", "missing", "corrupt", "unverifiable"]
PullOutcome = Literal["downloaded", "skipped", "failed"]

# Model weights are public data; readable by the service user whatever mkstemp's 0600 says.
_FILE_MODE = 0o644


@dataclass(frozen=True)
class ModelStatus:
    """What `verify_models` found for one model."""

    name: str
    kind: str
    file: str
    path: Path
    state: ModelState
    expected_sha256: str | None
    actual_sha256: str | None
    licence: str

    @property
    def ok(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True)
class ModelRow:
    """One row of `ufme-ray models list`."""

    name: str
    kind: str
    family: str
    licence: str
    state: ModelState
    source: str


@dataclass(frozen=True)
class PullResult:
    """What `pull_models` did for one model; `error` is set exactly when `outcome` is "failed"."""

    name: str
    file: str
    path: Path
    outcome: PullOutcome
    source: str | None = None
    sha256: str | None = None
    error: ModelStoreError | None = None

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


# --- hashing -------------------------------------------------------------------------------------

_verified: dict[tuple[str, int, int, int], str] = {}
_verified_lock = threading.Lock()


def _sha256_file(path: Path) -> str:
    """sha256 of the file, read in chunks. Blocks on disk I/O; raises OSError if unreadable."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key(path: Path) -> tuple[str, int, int, int]:
    # The inode catches a file swapped by rename even when size and mtime happen to match.
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino


def _cached_sha256(path: Path) -> str:
    """sha256 of `path`, hashed once per (path, size, mtime, inode) in this process."""
    key = _cache_key(path)
    with _verified_lock:
        cached = _verified.get(key)
    if cached is not None:
        return cached
    actual = _sha256_file(path)
    with _verified_lock:
        _verified[key] = actual
    return actual


def clear_verification_cache() -> None:
    """Forget every cached hash, so the next `resolve_model_path` re-hashes its file."""
    with _verified_lock:
        _verified.clear()


# --- verify / list / resolve --------------------------------------------------------------------


def _select(manifest: ModelManifest, names: Sequence[str] | None) -> list[ModelSpec]:
    """The specs named (all of the manifest when `names` is None); raises UnknownModelError."""
    if names is None:
        return list(manifest.models.values())
    return [manifest.get(name) for name in names]


def _status(model_dir: Path, spec: ModelSpec) -> ModelStatus:
    path = model_dir / spec.file
    actual: str | None = None
    if not path.is_file():
        state: ModelState = "missing"
    elif spec.sha256 is None:
        state = "unverifiable"
    else:
        # `verify` is the integrity check: always re-hash, never trust the cache.
        actual = _sha256_file(path)
        state = "ok" if actual == spec.sha256 else "corrupt"
    return ModelStatus(spec.name, spec.kind, spec.file, path, state, spec.sha256, actual, spec.licence)


def verify_models(
    model_dir: str | os.PathLike[str], manifest: ModelManifest, names: Sequence[str] | None = None
) -> list[ModelStatus]:
    """Hash every selected model file in `model_dir` and compare it with the manifest.

    Blocks while reading the files (sha256 of a few MB is cheap). Raises UnknownModelError for an
    unknown name and OSError for a file that exists but cannot be read.
    """
    folder = Path(model_dir)
    return [_status(folder, spec) for spec in _select(manifest, names)]


def model_source(spec: ModelSpec) -> str:
    """Where `pull` gets the model by default: its first upstream URL, or its mirror-only note."""
    return spec.urls[0] if spec.urls else f"mirror only: {spec.distribution}"


def list_models(manifest: ModelManifest, model_dir: str | os.PathLike[str]) -> list[ModelRow]:
    """One row per manifest model with its verification state in `model_dir`; hashes like verify."""
    statuses = {status.name: status for status in verify_models(model_dir, manifest)}
    return [
        ModelRow(spec.name, spec.kind, spec.family, spec.licence, statuses[spec.name].state, model_source(spec))
        for spec in manifest.models.values()
    ]


def resolve_model_path(model_dir: str | os.PathLike[str], spec: ModelSpec, verify: bool = True) -> Path:
    """The path of `spec`'s file in `model_dir`, checked against its sha256 when `verify`.

    The hash is cached per (path, size, mtime) in this process, so repeated loads do not re-hash.
    Raises ModelMissingError, ModelCorruptError, or UnverifiableModelError (verify on, no sha256).
    """
    path = Path(model_dir) / spec.file
    if not path.is_file():
        raise ModelMissingError(spec, path)
    if not verify:
        return path
    if spec.sha256 is None:
        raise UnverifiableModelError(spec)
    actual = _cached_sha256(path)
    if actual != spec.sha256:
        raise ModelCorruptError(spec, path, actual)
    return path


# --- pull ----------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable: without it a crash can lose the new directory entry.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _progress_bar(file: str, total: int | None, progress: bool) -> tqdm:
    # disable=None: tqdm switches itself off when stderr is not a terminal (CI logs, pipes).
    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=file, disable=None if progress else True
    )


def _write_verified(spec: ModelSpec, url: str, stream: Stream, folder: Path, progress: bool) -> str:
    """Stream into a temp file in `folder`, check sha256 and size, then rename it onto `spec.file`.

    Returns the sha256. Raises ChecksumMismatchError or DownloadError; on any exception (also
    KeyboardInterrupt) the temp file is removed, so no partial file is ever left behind.
    """
    descriptor, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{spec.file}.", suffix=".part")
    temp = Path(temp_name)
    try:
        digest, size = hashlib.sha256(), 0
        total = stream.total or spec.bytes
        with os.fdopen(descriptor, "wb") as out, _progress_bar(spec.file, total, progress) as bar:
            for chunk in stream.chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != spec.sha256 or (spec.bytes is not None and size != spec.bytes):
            raise ChecksumMismatchError(spec, url, actual, size)
        os.chmod(temp, _FILE_MODE)
        os.replace(temp, folder / spec.file)
        _fsync_dir(folder)
        return actual
    finally:
        temp.unlink(missing_ok=True)


def _download(spec: ModelSpec, url: str, folder: Path, progress: bool) -> PullResult:
    shown = redact(url)
    logger.info("pulling %s from %s", spec.name, shown)
    with open_source(spec.name, url) as stream:
        actual = _write_verified(spec, shown, stream, folder, progress)
    return PullResult(spec.name, spec.file, folder / spec.file, "downloaded", source=shown, sha256=actual)


def _candidate_urls(spec: ModelSpec, source: str | os.PathLike[str] | None) -> list[str]:
    if source is not None:
        return [mirror_url(source, spec.file)]
    if not spec.urls:
        raise NoUpstreamError(spec)
    return list(spec.urls)


def pull_model(
    model_dir: str | os.PathLike[str],
    spec: ModelSpec,
    source: str | os.PathLike[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> PullResult:
    """Install `spec`'s verified file in `model_dir`, unless it is already there and verified.

    `source` None tries the upstream URLs in order; otherwise it is a mirror (http(s) base URL,
    folder, file:// or object-store URI) holding `<source>/<file>`. Blocks on the network and disk.
    Raises UnverifiableModelError, NoUpstreamError, HttpStatusError, DownloadError or
    ChecksumMismatchError (the last URL's error when every upstream URL failed), and OSError when
    the model folder cannot be written.
    """
    folder = Path(model_dir)
    path = folder / spec.file
    if spec.sha256 is None:
        raise UnverifiableModelError(spec)
    if not force and path.is_file():
        # A full hash, not the load cache: this decides whether a file stays installed.
        actual = _sha256_file(path)
        if actual == spec.sha256:
            logger.info("%s: %s already present and verified", spec.name, path)
            return PullResult(spec.name, spec.file, path, "skipped", sha256=actual)
        logger.warning("%s: replacing corrupt %s (sha256 %s)", spec.name, path, actual)
    *fallbacks, last = _candidate_urls(spec, source)
    folder.mkdir(parents=True, exist_ok=True)
    for url in fallbacks:
        try:
            return _download(spec, url, folder, progress)
        except (DownloadError, ChecksumMismatchError) as error:
            logger.warning("%s; trying the next upstream URL", error)
    return _download(spec, last, folder, progress)


def pull_models(
    model_dir: str | os.PathLike[str],
    manifest: ModelManifest,
    names: Sequence[str] | None = None,
    source: str | os.PathLike[str] | None = None,
    progress: bool = True,
    force: bool = False,
) -> list[PullResult]:
    """`pull_model` for each selected model (all when `names` is None), one result per model.

    A model that fails is reported in its result (outcome "failed", `error` set) and the others
    are still pulled. Raises UnknownModelError for an unknown name before anything is fetched;
    KeyboardInterrupt propagates after the current temp file is removed.
    """
    results = []
    for spec in _select(manifest, names):
        try:
            results.append(pull_model(model_dir, spec, source, progress, force))
        except ModelStoreError as error:
            logger.error("%s", error)
            results.append(PullResult(spec.name, spec.file, Path(model_dir) / spec.file, "failed", error=error))
    return results
