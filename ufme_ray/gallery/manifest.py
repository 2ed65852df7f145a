"""What an epoch's MANIFEST records of each shard's snapshot, and where an epoch's objects lie.

The layout and the invariants are described in `gallery.snapshot`.
"""

from __future__ import annotations

import dataclasses

from ufme_ray.gallery.index import IndexParams

FORMAT_VERSION = 1


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

