"""Where model files come from: http(s) URLs, mirror folders, and object stores via pyarrow.fs.

Each source opens as a `Stream` of byte chunks; every error is a DownloadError whose URL and
message have had the credentials written in the URL replaced by ***, so URLs are safe to log.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from ufme_ray.models.errors import DownloadError, HttpStatusError

CHUNK_BYTES = 1 << 20
_HTTP_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
# Query keys whose values are redacted before a URL reaches a log line or an error message.
_SECRET_WORDS = ("key", "secret", "token", "signature", "password", "credential")


@dataclass(frozen=True)
class Stream:
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


def redact(url: str) -> str:
    """`url` fit for logs, errors and results."""
    return _scrub(url, url)


def mirror_url(source: str | os.PathLike[str], file: str) -> str:
    """Where a mirror keeps `file`: base URI + "/" + file (query kept), or folder / file."""
    text = os.fspath(source)
    if "://" not in text:
        return str(Path(text) / file)
    parts = urlsplit(text)
    path = f"{parts.path.rstrip('/')}/{quote(file)}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


@contextlib.contextmanager
def _http_stream(name: str, url: str) -> Iterator[Stream]:
    """GET `url`, following redirects; raises HttpStatusError or DownloadError."""
    shown = redact(url)
    try:
        with httpx.Client(follow_redirects=True, timeout=_HTTP_TIMEOUT) as client:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise HttpStatusError(name, shown, response.status_code)
                length = response.headers.get("content-length")
                yield Stream(response.iter_bytes(CHUNK_BYTES), int(length) if length else None)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise DownloadError(name, shown, _scrub(f"{type(error).__name__}: {error}", url)) from error


def _read_chunks(handle: BinaryIO, name: str, url: str) -> Iterator[bytes]:
    """The handle's bytes in chunks; a read error becomes DownloadError (write errors stay OSError)."""
    try:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk
    except OSError as error:
        raise DownloadError(name, redact(url), _scrub(str(error), url)) from error


@contextlib.contextmanager
def _local_stream(name: str, path: str) -> Iterator[Stream]:
    """Read a file of a mirror folder; raises DownloadError."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise DownloadError(name, path, str(error)) from error
    with handle:
        yield Stream(_read_chunks(handle, name, path), os.fstat(handle.fileno()).st_size)


@contextlib.contextmanager
def _object_store_stream(name: str, uri: str) -> Iterator[Stream]:
    """Read `uri` (file://, s3://…) through pyarrow.fs; raises DownloadError."""
    # Imported here: pyarrow is slow to import and only mirrors on object stores need it.
    import pyarrow
    import pyarrow.fs

    shown = redact(uri)
    try:
        filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
        total = filesystem.get_file_info(path).size
        handle = filesystem.open_input_stream(path)
    except (OSError, pyarrow.ArrowException) as error:
        raise DownloadError(name, shown, _scrub(str(error), uri)) from error
    with handle:
        yield Stream(_read_chunks(handle, name, uri), total)


def open_source(name: str, url: str) -> contextlib.AbstractContextManager[Stream]:
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme in ("http", "https"):
        return _http_stream(name, url)
    if not scheme:
        return _local_stream(name, url)
    return _object_store_stream(name, url)
