"""Shard snapshots in object storage: written once, published by a manifest and a pointer.

Layout, for snapshot epoch E (zero-padded to 10 digits):

    snapshots/<E>/shard-<i>.index        FAISS index bytes (rows 0..n-1 are FAISS ids)
    snapshots/<E>/shard-<i>.rows.arrow   Arrow IPC: template_id, subject_id, quality, enrolled_at and
                                         the request key (or null) per row, rows grouped by subject
                                         key (sorted by gallery, then subject), templates in id order
    snapshots/<E>/shard-<i>.rerank.faiss float16 vectors (FAISS IndexScalarQuantizer), IVF-PQ only
    snapshots/<E>/shard-<i>.galleries.json  erased gallery generations and (shard 0) the registry of
                                         galleries, when there is any (`gallery.galleries`)
    snapshots/<E>/shard-<i>.json         watermark, counts, index params, sha256 + size of each part
    snapshots/<E>/MANIFEST.json          shard count, dim, index params, every shard's watermark and
                                         the sha256 of each of its parts (written after all shards)
    CURRENT                              {"epoch": E}, written last: the commit point

Invariants: a shard snapshot holds exactly the effect of the shard's events with seq <= its
watermark (enrolments of subjects not deleted later within that range); an epoch is visible only
once its MANIFEST exists, and current only once CURRENT names it; loading verifies every part's
sha256 against the manifest and refuses a mismatch with `CorruptSnapshotError`.

This module writes and loads one shard's parts; `manifest` holds what the MANIFEST records and
`epochs` writes and reads it and CURRENT.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.ipc as paipc

from ufme_ray.config import IndexSettings
from ufme_ray.gallery.epochs import read_current, read_manifest
from ufme_ray.gallery.events import REQUEST_BYTES
from ufme_ray.gallery.galleries import ShardGalleries
from ufme_ray.gallery.index import BuiltIndex, IndexParams, deserialize, read_mmap, serialize
from ufme_ray.gallery.manifest import CorruptSnapshotError, Manifest, PartInfo, ShardSnapshotInfo, part_key
from ufme_ray.gallery.storage import ObjectNotFoundError, ObjectStore

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SnapshotRows:
    """Per-row data of a shard snapshot; rows grouped by subject key, keys sorted by (gallery,
    subject id) so that each gallery's rows are contiguous (`galleries.sort_key`).

    Rows of subject `subjects[c]` are `starts[c]:starts[c + 1]`.
    """

    template_ids: np.ndarray  # int64
    quality: np.ndarray  # float32
    enrolled_at: np.ndarray  # float64
    subjects: list[str]
    starts: np.ndarray  # int64, len(subjects) + 1
    requests: dict[int, bytes] = dataclasses.field(default_factory=dict)  # row -> request key (few rows have one)

    @classmethod
    def empty(cls) -> "SnapshotRows":
        return cls(
            np.empty(0, np.int64), np.empty(0, np.float32), np.empty(0, np.float64), [], np.zeros(1, np.int64)
        )

    def __len__(self) -> int:
        return len(self.template_ids)

    def subject_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Subject index of each row (rows must be valid)."""
        return np.searchsorted(self.starts, rows, side="right") - 1

    def to_arrow_bytes(self) -> bytes:
        counts = np.diff(self.starts)
        subject_codes = np.repeat(np.arange(len(self.subjects), dtype=np.int32), counts)
        table = pa.table(
            {
                "template_id": pa.array(self.template_ids, pa.int64()),
                "subject_id": pa.DictionaryArray.from_arrays(
                    pa.array(subject_codes, pa.int32()), pa.array(self.subjects, pa.string())
                ),
                "quality": pa.array(self.quality, pa.float32()),
                "enrolled_at": pa.array(self.enrolled_at, pa.float64()),
                "request": pa.array([self.requests.get(row) for row in range(len(self))], pa.binary(REQUEST_BYTES))
                if self.requests
                else pa.nulls(len(self), pa.binary(REQUEST_BYTES)),
            }
        )
        sink = io.BytesIO()
        with paipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    @classmethod
    def from_arrow_bytes(cls, data: bytes, name: str) -> "SnapshotRows":
        try:
            table = paipc.open_file(pa.py_buffer(data)).read_all()
            subject = table.column("subject_id").combine_chunks()
            codes = subject.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            subjects = subject.dictionary.to_pylist()
            template_ids = table.column("template_id").to_numpy().astype(np.int64)
            quality = table.column("quality").to_numpy().astype(np.float32)
            enrolled_at = table.column("enrolled_at").to_numpy().astype(np.float64)
            requests = {}
            if "request" in table.column_names:  # snapshots written before request keys have none
                column = table.column("request").combine_chunks()
                for row in np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False)).tolist():
                    requests[row] = column[row].as_py()
        except (pa.ArrowException, KeyError, AttributeError) as exc:
            raise CorruptSnapshotError(f"{name}: unreadable rows table ({exc})") from exc
        if len(codes) and (np.diff(codes) < 0).any():
            raise CorruptSnapshotError(f"{name}: rows are not grouped by subject")
        starts = np.searchsorted(codes, np.arange(len(subjects) + 1), side="left").astype(np.int64)
        return cls(template_ids, quality, enrolled_at, subjects, starts, requests)


@dataclasses.dataclass
class ShardSnapshot:
    """One shard's snapshot in memory: the built index and its rows. Epoch 0 is the empty start."""

    shard: int
    epoch: int
    watermark: int
    next_template_counter: int
    index: BuiltIndex
    rows: SnapshotRows
    rerank_path: Path | None = None  # local file behind a memory-mapped rerank store
    galleries: ShardGalleries = dataclasses.field(default_factory=ShardGalleries)

    @classmethod
    def empty(cls, shard: int, dim: int, settings: IndexSettings) -> "ShardSnapshot":
        """The state before any snapshot: no rows, watermark 0."""
        params = IndexParams(kind="flat", dim=dim)
        index = BuiltIndex(params, faiss.IndexFlatIP(dim), np.empty(0, np.int64), None, settings)
        return cls(shard=shard, epoch=0, watermark=0, next_template_counter=1, index=index, rows=SnapshotRows.empty())


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def write_shard_snapshot(
    store: ObjectStore,
    epoch: int,
    shard: int,
    index: BuiltIndex,
    rows: SnapshotRows,
    *,
    watermark: int,
    next_template_counter: int,
    rerank_file: str | Path | None = None,
    galleries: ShardGalleries | None = None,
) -> ShardSnapshotInfo:
    """Write shard `shard`'s parts of epoch `epoch` under new keys; returns what the manifest records.

    `rerank_file`, if given, is the local FAISS file behind `index.rerank` and is streamed instead
    of serialised in memory. Nothing becomes visible to loaders until `write_manifest` and
    `publish_current`. Raises ObjectExistsError if the epoch already holds this shard.
    """
    if len(rows) != index.ntotal or not np.array_equal(rows.template_ids, index.ids):
        raise ValueError(f"shard {shard}: rows ({len(rows)}) and index ({index.ntotal}) disagree")
    parts: dict[str, PartInfo] = {}

    def put(name: str, data: bytes) -> None:
        key = part_key(epoch, shard, name)
        store.write(key, data)
        parts[name] = PartInfo(key=key, sha256=_sha256(data), size_bytes=len(data))

    put("index", serialize(index.index))
    put("rows.arrow", rows.to_arrow_bytes())
    if index.rerank is not None:
        if rerank_file is not None:
            key = part_key(epoch, shard, "rerank.faiss")
            digest = store.write_file(key, rerank_file)
            parts["rerank.faiss"] = PartInfo(key=key, sha256=digest, size_bytes=Path(rerank_file).stat().st_size)
        else:
            put("rerank.faiss", serialize(index.rerank))
    if galleries is not None and not galleries.is_initial():
        put("galleries.json", json.dumps(galleries.to_json(), sort_keys=True).encode())
    info = ShardSnapshotInfo(
        shard=shard,
        watermark=watermark,
        next_template_counter=next_template_counter,
        count=len(rows),
        params=index.params,
        parts=dict(parts),
    )
    put("json", json.dumps(info.to_json(), indent=1).encode())
    logger.info("epoch %d shard %d: wrote %d rows through seq %d", epoch, shard, len(rows), watermark)
    return dataclasses.replace(info, parts=parts)


def _verified(store: ObjectStore, part: PartInfo) -> bytes:
    try:
        data = store.read(part.key)
    except ObjectNotFoundError as exc:
        raise CorruptSnapshotError(f"snapshot part {part.key} is missing") from exc
    if len(data) != part.size_bytes or _sha256(data) != part.sha256:
        raise CorruptSnapshotError(f"snapshot part {part.key} fails its sha256 check (size {len(data)})")
    return data


def load_shard_snapshot(
    store: ObjectStore,
    epoch: int,
    shard: int,
    settings: IndexSettings,
    *,
    manifest: Manifest | None = None,
    rerank_dir: str | Path | None = None,
) -> ShardSnapshot:
    """Load and verify shard `shard` of epoch `epoch`.

    The rerank store (IVF-PQ only) is copied to a file in the local folder `rerank_dir` and
    memory-mapped from there when `rerank_dir` is given, else held in RAM.
    Raises CorruptSnapshotError if any part is missing, fails its sha256, or disagrees with the
    manifest.
    """
    manifest = manifest or read_manifest(store, epoch)
    info = manifest.shards.get(shard)
    if info is None:
        raise CorruptSnapshotError(f"epoch {epoch} manifest has no shard {shard}")
    for name in ("index", "rows.arrow", "json"):
        if name not in info.parts:
            raise CorruptSnapshotError(f"epoch {epoch} shard {shard} manifest lists no {name} part")
    meta = json.loads(_verified(store, info.parts["json"]))
    listed = dataclasses.replace(info, parts={k: v for k, v in info.parts.items() if k != "json"})
    if ShardSnapshotInfo.from_json(meta) != listed:
        raise CorruptSnapshotError(f"epoch {epoch} shard {shard}: shard metadata disagrees with the manifest")
    rows = SnapshotRows.from_arrow_bytes(_verified(store, info.parts["rows.arrow"]), info.parts["rows.arrow"].key)
    index_bytes = _verified(store, info.parts["index"])
    rerank, rerank_path = None, None
    if info.params.kind == "ivfpq":
        part = info.parts.get("rerank.faiss")
        if part is None:
            raise CorruptSnapshotError(f"epoch {epoch} shard {shard}: IVF-PQ snapshot without rerank vectors")
        rerank, rerank_path = _load_rerank(store, part, rerank_dir)
    galleries = ShardGalleries()
    if "galleries.json" in info.parts:
        try:
            galleries = ShardGalleries.from_json(json.loads(_verified(store, info.parts["galleries.json"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptSnapshotError(f"epoch {epoch} shard {shard}: unreadable galleries part ({exc})") from exc
    try:
        index = BuiltIndex(info.params, deserialize(index_bytes), rows.template_ids, rerank, settings)
    except (RuntimeError, ValueError) as exc:
        raise CorruptSnapshotError(f"epoch {epoch} shard {shard}: index does not load ({exc})") from exc
    if index.ntotal != info.count or len(rows) != info.count:
        raise CorruptSnapshotError(f"epoch {epoch} shard {shard}: expected {info.count} rows, index has {index.ntotal}")
    logger.info(
        "loaded epoch %d shard %d: %d rows (%s) through seq %d",
        epoch, shard, info.count, info.params.kind, info.watermark,
    )
    return ShardSnapshot(
        shard=shard,
        epoch=epoch,
        watermark=info.watermark,
        next_template_counter=info.next_template_counter,
        index=index,
        rows=rows,
        rerank_path=rerank_path,
        galleries=galleries,
    )


def _load_rerank(
    store: ObjectStore, part: PartInfo, rerank_dir: str | Path | None
) -> tuple[faiss.IndexScalarQuantizer, Path | None]:
    if rerank_dir is not None:
        target = Path(rerank_dir) / part.key.replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = store.read_to_file(part.key, target)
        if digest != part.sha256 or target.stat().st_size != part.size_bytes:
            target.unlink(missing_ok=True)
            raise CorruptSnapshotError(f"snapshot part {part.key} fails its sha256 check")
        return read_mmap(target), target
    return deserialize(_verified(store, part)), None


def load_current_snapshot(
    store: ObjectStore,
    shard: int,
    num_shards: int,
    dim: int,
    settings: IndexSettings,
    *,
    rerank_dir: str | Path | None = None,
) -> ShardSnapshot:
    """Shard `shard` of the epoch CURRENT names, or the empty start if none was ever published.

    Raises ValueError if that epoch is for another gallery shape, else as `load_shard_snapshot`.
    """
    epoch = read_current(store)
    if epoch is None:
        return ShardSnapshot.empty(shard, dim, settings)
    manifest = read_manifest(store, epoch)
    manifest.check_shape(num_shards, dim)
    return load_shard_snapshot(store, epoch, shard, settings, manifest=manifest, rerank_dir=rerank_dir)
