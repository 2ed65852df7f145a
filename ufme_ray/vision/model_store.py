"""The model store: list, verify, pull and resolve the ONNX files named by the model manifest.

A model folder (`settings.model_dir`) holds files named `spec.file`; a file is trusted only when
its sha256 equals the manifest's. `pull_models` fetches from the manifest's upstream URLs or from a
mirror (`http(s)://base/`, a local folder or `file://` URI, or an object-store URI such as
`s3://bucket/prefix?endpoint_override=…`), and installs a file only after its checksum matched, by
an atomic rename of a temporary file in the same folder. No Ray, no FastAPI: the CLI and the vision
model classes both call in here.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
from tqdm import tqdm

from ufme_ray.vision.errors import VisionError
from ufme_ray.vision.manifest import Manifest, ModelSpec

logger = logging.getLogger(__name__)

ModelState = Literal["ok", "missing", "corrupt", "unverifiable"]
PullOutcome = Literal["downloaded", "skipped", "failed"]

_CHUNK_BYTES = 1 << 20
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
# Model weights are public data; readable by the service user whatever mkstemp's 0600 says.
_FILE_MODE = 0o644
# Query keys whose values are redacted before a URL reaches a log line or an error message.
_SECRET_WORDS = ("key", "secret", "token", "signature", "password", "credential")

EXIT_OK = 0
"""`verify`/`pull` exit code: every model checked is present and verified."""
EXIT_CORRUPT = 1
"""`verify` exit code: at least one file does not match its sha256. `pull`: at least one failed."""
EXIT_INCOMPLETE = 2
"""`verify` exit code: nothing corrupt, but some file is missing or has no sha256 to check."""


class ModelStoreError(VisionError):
    """Base of every error raised by the model store."""


class ModelMissingError(ModelStoreError):
    """A model file is not in the model folder."""

    def __init__(self, spec: ModelSpec, path: Path):
        self.name, self.path = spec.name, path
        super().__init__(
            f"model {spec.name}: file {spec.file} not found in {path.parent} (the model folder, set by "
            f"model_dir / UFME_MODEL_DIR); fetch it with `{pull_command(spec)}`"
        )


class ModelCorruptError(ModelStoreError):
    """A model file is present but its sha256 differs from the manifest's."""

    def __init__(self, spec: ModelSpec, path: Path, actual_sha256: str):
        self.name, self.path = spec.name, path
        self.expected_sha256, self.actual_sha256 = spec.sha256, actual_sha256
        super().__init__(
            f"model {spec.name}: {path} is corrupt: sha256 {actual_sha256}, expected {spec.sha256}; "
            f"replace it with `{pull_command(spec)} --force`"
        )


class UnverifiableModelError(ModelStoreError):
    """The manifest lists the model without a sha256, so no file of it can be trusted."""

    def __init__(self, spec: ModelSpec):
        self.name = spec.name
        super().__init__(
            f"model {spec.name} has no sha256 in the manifest: its file cannot be verified, so it is "
            "neither downloaded nor loaded with checksum verification on"
        )


class NoUpstreamError(ModelStoreError):
    """The model has no upstream URL and no mirror was given."""

    def __init__(self, spec: ModelSpec):
        self.name = spec.name
        super().__init__(
            f"{spec.name} has no upstream ONNX file: {spec.distribution}; pull it from a mirror with --from"
        )


class DownloadError(ModelStoreError):
    """Fetching a model file from `url` failed (network, missing object, truncated body, …)."""

    def __init__(self, name: str, url: str, reason: str):
        self.name, self.url, self.reason = name, url, reason
        super().__init__(f"model {name}: download from {url} failed: {reason}")


class HttpStatusError(DownloadError):
    """The HTTP server answered `url` with an error status."""

    def __init__(self, name: str, url: str, status: int):
        self.status = status
        super().__init__(name, url, f"HTTP {status}")


class ChecksumMismatchError(ModelStoreError):
    """A downloaded file's sha256 or byte size differs from the manifest's; the file was discarded."""

    def __init__(self, spec: ModelSpec, url: str, actual_sha256: str, actual_bytes: int):
        self.name, self.url = spec.name, url
        self.expected_sha256, self.actual_sha256 = spec.sha256, actual_sha256
        self.expected_bytes, self.actual_bytes = spec.bytes, actual_bytes
        size = f", {actual_bytes} bytes (expected {spec.bytes})" if spec.bytes not in (None, actual_bytes) else ""
        super().__init__(
            f"model {spec.name}: checksum mismatch for {url}: sha256 {actual_sha256}, "
            f"expected {spec.sha256}{size}; the download was discarded"
        )


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


def pull_command(spec: ModelSpec) -> str:
    """The CLI command that installs `spec` (with a `--from` placeholder when it has no upstream)."""
    mirror = "" if spec.urls else " --from <url|folder|s3://…>"
    return f"ufme-ray models pull {spec.name}{mirror}"


# --- hashing -------------------------------------------------------------------------------------

_verified: dict[tuple[str, int, int, int], str] = {}
_verified_lock = threading.Lock()


def _sha256_file(path: Path) -> str:
    """sha256 of the file, read in chunks. Blocks on disk I/O; raises OSError if unreadable."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
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


def _select(manifest: Manifest, names: Sequence[str] | None) -> list[ModelSpec]:
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
    model_dir: str | os.PathLike[str], manifest: Manifest, names: Sequence[str] | None = None
) -> list[ModelStatus]:
    """Hash every selected model file in `model_dir` and compare it with the manifest.

    Blocks while reading the files (sha256 of a few MB is cheap). Raises UnknownModelError for an
    unknown name and OSError for a file that exists but cannot be read.
    """
    folder = Path(model_dir)
    return [_status(folder, spec) for spec in _select(manifest, names)]


def verify_exit_code(statuses: Iterable[ModelStatus]) -> int:
    """EXIT_OK if all are ok; EXIT_CORRUPT if any file is corrupt; else EXIT_INCOMPLETE."""
    states = {status.state for status in statuses}
    if "corrupt" in states:
        return EXIT_CORRUPT
    if states - {"ok"}:
        return EXIT_INCOMPLETE
    return EXIT_OK


def pull_exit_code(results: Iterable[PullResult]) -> int:
    """EXIT_OK if every pull downloaded or skipped its model, else EXIT_CORRUPT."""
    return EXIT_OK if all(result.ok for result in results) else EXIT_CORRUPT


def model_source(spec: ModelSpec) -> str:
    """Where `pull` gets the model by default: its first upstream URL, or its mirror-only note."""
    return spec.urls[0] if spec.urls else f"mirror only: {spec.distribution}"


def list_models(manifest: Manifest, model_dir: str | os.PathLike[str]) -> list[ModelRow]:
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


# --- sources -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stream:
    chunks: Iterator[bytes]
    total: int | None


def _secrets(url: str) -> list[str]:
    """The credentials written in `url`: its user-info and the values of secret-looking query keys."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    found = {userinfo, userinfo.partition(":")[2]}
    for pair in parts.query.split("&"):
        key, _, value = pair.partition("=")
        if any(word in key.lower() for word in _SECRET_WORDS):
            found |= {value, unquote(value)}
    found.discard("")
    # Longest first, so a secret containing another is replaced whole.
    return sorted(found, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    """`text` (an error message, or `url` itself) with every credential of `url` replaced by ***."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


def _redact(url: str) -> str:
    """`url` fit for logs, errors and results."""
    return _scrub(url, url)


def _mirror_url(source: str | os.PathLike[str], file: str) -> str:
    """Where a mirror keeps `file`: base URI + "/" + file (query kept), or folder / file."""
    text = os.fspath(source)
    if "://" not in text:
        return str(Path(text) / file)
    parts = urlsplit(text)
    path = f"{parts.path.rstrip('/')}/{quote(file)}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@contextlib.contextmanager
def _http_stream(name: str, url: str) -> Iterator[_Stream]:
    """GET `url`, following redirects; raises HttpStatusError or DownloadError."""
    shown = _redact(url)
    try:
        with httpx.Client(follow_redirects=True, timeout=_HTTP_TIMEOUT) as client:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise HttpStatusError(name, shown, response.status_code)
                length = response.headers.get("content-length")
                yield _Stream(response.iter_bytes(_CHUNK_BYTES), int(length) if length else None)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise DownloadError(name, shown, _scrub(f"{type(error).__name__}: {error}", url)) from error


def _read_chunks(handle: BinaryIO, name: str, url: str) -> Iterator[bytes]:
    """The handle's bytes in chunks; a read error becomes DownloadError (write errors stay OSError)."""
    try:
        while chunk := handle.read(_CHUNK_BYTES):
            yield chunk
    except OSError as error:
        raise DownloadError(name, _redact(url), _scrub(str(error), url)) from error


@contextlib.contextmanager
def _local_stream(name: str, path: str) -> Iterator[_Stream]:
    """Read a file of a mirror folder; raises DownloadError."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise DownloadError(name, path, str(error)) from error
    with handle:
        yield _Stream(_read_chunks(handle, name, path), os.fstat(handle.fileno()).st_size)


@contextlib.contextmanager
def _object_store_stream(name: str, uri: str) -> Iterator[_Stream]:
    """Read `uri` (file://, s3://…) through pyarrow.fs; raises DownloadError."""
    # Imported here: pyarrow is slow to import and only mirrors on object stores need it.
    import pyarrow
    import pyarrow.fs

    shown = _redact(uri)
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        total = filesystem.get_file_info(path).size
        handle = filesystem.open_input_stream(path)
    except (OSError, pyarrow.ArrowException) as error:
        raise DownloadError(name, shown, _scrub(str(error), uri)) from error
    with handle:
        yield _Stream(_read_chunks(handle, name, uri), total)


def _open_source(name: str, url: str) -> contextlib.AbstractContextManager[_Stream]:
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("http", "https"):
        return _http_stream(name, url)
    if not scheme:
        return _local_stream(name, url)
    return _object_store_stream(name, url)


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


def _write_verified(spec: ModelSpec, url: str, stream: _Stream, folder: Path, progress: bool) -> str:
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
    shown = _redact(url)
    logger.info("pulling %s from %s", spec.name, shown)
    with _open_source(spec.name, url) as stream:
        actual = _write_verified(spec, shown, stream, folder, progress)
    return PullResult(spec.name, spec.file, folder / spec.file, "downloaded", source=shown, sha256=actual)


def _candidate_urls(spec: ModelSpec, source: str | os.PathLike[str] | None) -> list[str]:
    if source is not None:
        return [_mirror_url(source, spec.file)]
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
    manifest: Manifest,
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
