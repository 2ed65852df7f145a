"""What a bulk import reads: a folder or an s3:// prefix laid out `<subject_id>/<photo>`, or a CSV
or Parquet manifest with columns `subject_id` and `uri` (file paths or s3:// URIs). Listed with
pyarrow.fs, before anything is submitted, so a source that does not exist or a manifest that
does not parse is refused at once."""

from __future__ import annotations

import io
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as papq

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


class ImportSourceError(ValueError):
    """The source cannot be imported as given (missing, empty, or a manifest without its columns)."""


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ImportSourceError(f"cannot open {uri!r}: {exc}") from exc


def list_source(source: str) -> list[dict[str, str]]:
    """Every photo of the source as {subject_id, uri}, in a stable order. Subject ids are not
    checked here: an invalid one is reported per photo by the import."""
    if source.lower().endswith((".csv", ".parquet")):
        return _manifest(source)
    fs, root = _filesystem(source)
    info = fs.get_file_info(root)
    if info.type != pafs.FileType.Directory:
        raise ImportSourceError(f"{source!r} is not a folder or prefix (nor a .csv/.parquet manifest)")
    base = source.rstrip("/")
    photos = []
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        relative = PurePosixPath(entry.path).relative_to(PurePosixPath(root))
        if entry.type == pafs.FileType.File and len(relative.parts) == 2:
            photos.append({"subject_id": relative.parts[0], "uri": f"{base}/{relative}"})
    if not photos:
        raise ImportSourceError(f"{source!r} holds no <subject_id>/<photo> files")
    return sorted(photos, key=lambda p: (p["subject_id"], p["uri"]))


def _manifest(source: str) -> list[dict[str, str]]:
    fs, path = _filesystem(source)
    try:
        with fs.open_input_file(path) as handle:
            data = handle.read()
        table = papq.read_table(io.BytesIO(data)) if source.lower().endswith(".parquet") else pacsv.read_csv(io.BytesIO(data))
    except (OSError, pa.ArrowException) as exc:
        raise ImportSourceError(f"cannot read the manifest {source!r}: {exc}") from exc
    missing = {"subject_id", "uri"} - set(table.column_names)
    if missing:
        raise ImportSourceError(f"the manifest {source!r} lacks the column(s) {sorted(missing)}")
    rows = [{"subject_id": str(s), "uri": str(u)} for s, u in zip(table["subject_id"].to_pylist(), table["uri"].to_pylist())]
    if not rows:
        raise ImportSourceError(f"the manifest {source!r} lists no photo")
    return rows


def read_photo(uri: str, max_bytes: int) -> bytes:
    """The photo's bytes, at most max_bytes + 1 (one over is enough to refuse it as too large)."""
    fs, path = _filesystem(uri)
    with fs.open_input_stream(path) as handle:
        return handle.read(max_bytes + 1)
