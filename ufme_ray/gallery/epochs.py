"""Publishing and finding snapshot epochs: the MANIFEST that makes an epoch visible, and CURRENT.

An epoch is visible only once its MANIFEST exists, and current only once CURRENT names it
(the layout is described in `gallery.snapshot`).
"""

from __future__ import annotations

import json
import logging
import re
import time

from ufme_ray.config import IndexSettings
from ufme_ray.gallery.manifest import (
    FORMAT_VERSION,
    CorruptSnapshotError,
    Manifest,
    ShardSnapshotInfo,
    epoch_prefix,
)
from ufme_ray.gallery.storage import ObjectNotFoundError, ObjectStore

logger = logging.getLogger(__name__)

CURRENT_KEY = "CURRENT"
_EPOCH_RE = re.compile(r"^snapshots/(\d{10})/")


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
