"""Shard snapshots in object storage: written once, published by a manifest and a pointer.

Layout, for snapshot epoch E (zero-padded to 10 digits):

    snapshots/<E>/shard-<i>.index        FAISS index bytes (rows 0..n-1 are FAISS ids)
    snapshots/<E>/shard-<i>.rows.arrow   Arrow IPC: template_id, subject_id, quality, enrolled_at per
                                         row, rows grouped by subject (sorted), templates in id order
    snapshots/<E>/shard-<i>.rerank.faiss float16 vectors (FAISS IndexScalarQuantizer), IVF-PQ only
    snapshots/<E>/shard-<i>.json         watermark, counts, index params, sha256 + size of each part
    snapshots/<E>/MANIFEST.json          shard count, dim, index params, every shard's watermark and
                                         the sha256 of each of its parts (written after all shards)
    CURRENT                              {"epoch": E}, written last: the commit point

Invariants: a shard snapshot holds exactly the effect of the shard's events with seq <= its
watermark (enrolments of subjects not deleted later within that range); an epoch is visible only
once its MANIFEST exists, and current only once CURRENT names it; loading verifies every part's
sha256 against the manifest and refuses a mismatch with `CorruptSnapshotError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.ipc as paipc

from ufme_ray.config import IndexSettings
from ufme_ray.gallery.index import BuiltIndex, IndexParams, deserialize, read_mmap, serialize
from ufme_ray.gallery.storage import ObjectNotFoundError, ObjectStore

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT_KEY = "CURRENT"
_EPOCH_RE = re.compile(r"^snapshots/(\d{10})/")


class CorruptSnapshotError(RuntimeError):
    """A snapshot part is missing, fails its checksum, or disagrees with its manifest."""


def epoch_prefix(epoch: int) -> str:
    return f"snapshots/{epoch:010d}"


def part_key(epoch: int, shard: int, part: str) -> str:
    return f"{epoch_prefix(epoch)}/shard-{shard}.{part}"


@dataclasses.dataclass(frozen=True)
class PartInfo:
    key: str
    sha256: str
    size_bytes: int


@dataclasses.dataclass(frozen=True)
class ShardSnapshotInfo:
    """What the manifest records of one shard's snapshot."""

    shard: int
    watermark: int
    next_template_counter: int
    count: int
    params: IndexParams
    parts: dict[str, PartInfo]

    def to_json(self) -> dict:
        return {
            "shard": self.shard,
            "watermark": self.watermark,
            "next_template_counter": self.next_template_counter,
            "count": self.count,
            "params": self.params.to_json(),
            "parts": {name: dataclasses.asdict(info) for name, info in self.parts.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "ShardSnapshotInfo":
        return cls(
            shard=int(data["shard"]),
            watermark=int(data["watermark"]),
            next_template_counter=int(data["next_template_counter"]),
            count=int(data["count"]),
            params=IndexParams.from_json(data["params"]),
            parts={name: PartInfo(**info) for name, info in data["parts"].items()},
        )


@dataclasses.dataclass(frozen=True)
class Manifest:
    epoch: int
    num_shards: int
    dim: int
    index_settings: dict
    created_at: float
    shards: dict[int, ShardSnapshotInfo]

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "epoch": self.epoch,
            "num_shards": self.num_shards,
            "dim": self.dim,
            "index_settings": self.index_settings,
            "created_at": self.created_at,
            "shards": [self.shards[i].to_json() for i in sorted(self.shards)],
        }

    def check_shape(self, num_shards: int, dim: int) -> None:
        """Raise ValueError unless this epoch is for `num_shards` shards of dimension `dim`."""
        if (self.num_shards, self.dim) != (num_shards, dim):
            raise ValueError(
                f"snapshot epoch {self.epoch} is for {self.num_shards} shards of dim {self.dim}, "
                f"not {num_shards} shards of dim {dim}"
            )


@dataclasses.dataclass(frozen=True)
class SnapshotRows:
    """Per-row data of a shard snapshot; rows grouped by subject, subjects sorted.

    Rows of subject `subjects[c]` are `starts[c]:starts[c + 1]`.
    """

    template_ids: np.ndarray  # int64
    quality: np.ndarray  # float32
    enrolled_at: np.ndarray  # float64
    subjects: list[str]
    starts: np.ndarray  # int64, len(subjects) + 1

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
        except (pa.ArrowException, KeyError, AttributeError) as exc:
            raise CorruptSnapshotError(f"{name}: unreadable rows table ({exc})") from exc
        if len(codes) and (np.diff(codes) < 0).any():
            raise CorruptSnapshotError(f"{name}: rows are not grouped by subject")
        starts = np.searchsorted(codes, np.arange(len(subjects) + 1), side="left").astype(np.int64)
        return cls(template_ids, quality, enrolled_at, subjects, starts)


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


def write_manifest(
    store: ObjectStore,
    epoch: int,
    num_shards: int,
    dim: int,
    index_settings: IndexSettings,
    shards: list[ShardSnapshotInfo],
) -> Manifest:
    """Write epoch `epoch`'s MANIFEST.json once every shard's parts are written."""
    by_shard = {info.shard: info for info in shards}
    if sorted(by_shard) != list(range(num_shards)):
        raise ValueError(f"manifest needs shards 0..{num_shards - 1}, got {sorted(by_shard)}")
    manifest = Manifest(
        epoch=epoch,
        num_shards=num_shards,
        dim=dim,
        index_settings=index_settings.model_dump(mode="json"),
        created_at=time.time(),
        shards=by_shard,
    )
    store.write(f"{epoch_prefix(epoch)}/MANIFEST.json", json.dumps(manifest.to_json(), indent=1).encode())
    return manifest


def publish_current(store: ObjectStore, epoch: int) -> None:
    """Make epoch `epoch` current (the commit point of a compaction). Its manifest must exist."""
    if not store.exists(f"{epoch_prefix(epoch)}/MANIFEST.json"):
        raise CorruptSnapshotError(f"epoch {epoch} has no manifest; refusing to make it current")
    store.replace(CURRENT_KEY, json.dumps({"epoch": epoch}).encode())
    logger.info("snapshot epoch %d is current (%s)", epoch, store.uri)


def read_current(store: ObjectStore) -> int | None:
    """The current snapshot epoch, or None if no snapshot was ever published."""
    try:
        data = store.read(CURRENT_KEY)
    except ObjectNotFoundError:
        return None
    try:
        return int(json.loads(data)["epoch"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptSnapshotError(f"{store.uri}/{CURRENT_KEY} is unreadable: {data[:100]!r}") from exc


def next_epoch(store: ObjectStore) -> int:
    """An epoch number no snapshot (complete or abandoned) has used."""
    used = [int(m.group(1)) for key in store.list("snapshots") if (m := _EPOCH_RE.match(key))]
    return max(used, default=0) + 1


def read_manifest(store: ObjectStore, epoch: int) -> Manifest:
    """Epoch `epoch`'s manifest. Raises CorruptSnapshotError if missing or malformed."""
    key = f"{epoch_prefix(epoch)}/MANIFEST.json"
    try:
        data = json.loads(store.read(key))
        if data["format_version"] != FORMAT_VERSION or data["epoch"] != epoch:
            raise ValueError(f"format {data['format_version']} epoch {data['epoch']}")
        shards = {int(s["shard"]): ShardSnapshotInfo.from_json(s) for s in data["shards"]}
        return Manifest(
            epoch=epoch,
            num_shards=int(data["num_shards"]),
            dim=int(data["dim"]),
            index_settings=data["index_settings"],
            created_at=float(data["created_at"]),
            shards=shards,
        )
    except ObjectNotFoundError as exc:
        raise CorruptSnapshotError(f"snapshot epoch {epoch} has no manifest ({key})") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptSnapshotError(f"{key} is malformed: {exc}") from exc


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
