"""Galleries inside the shards: how a subject is named within its gallery, and the registry.

A gallery is a namespace of subjects (a watchlist, a site, a customer): the same subject id in
two galleries is two subjects. Inside the shards a subject is its *key*: the bare subject id in
the gallery `default`, `<gallery>/<subject>` in any other ('/' is in neither id's alphabet). So a
store written before galleries existed is the gallery `default` as it stands, with no rewrite,
and a subject of `default` lives on the shard it always did.

The registry (which galleries exist, their description and policy) is a fold of `GalleryEvent`s
in shard 0's log; `EraseGalleryEvent`s in every shard's log erase a deleted gallery's templates.
Each incarnation of a gallery has a *generation*: the shard-0 seq of the event that created it
(0 for `default`). A shard refuses an enrolment into a generation it has erased, so an enrolment
racing a gallery delete cannot bring the gallery back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable

from ufme_ray.gallery.events import GalleryEvent
from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN

DEFAULT_GALLERY = "default"
GALLERY_ID_PATTERN = SUBJECT_ID_PATTERN
_SEPARATOR = "/"


def subject_key(gallery_id: str, subject_id: str) -> str:
    return subject_id if gallery_id == DEFAULT_GALLERY else f"{gallery_id}{_SEPARATOR}{subject_id}"


def split_key(key: str) -> tuple[str, str]:
    """(gallery id, subject id) of a subject key."""
    gallery_id, separator, subject_id = key.partition(_SEPARATOR)
    return (gallery_id, subject_id) if separator else (DEFAULT_GALLERY, key)


def gallery_of(key: str) -> str:
    return split_key(key)[0]


def sort_key(key: str) -> tuple[str, str]:
    """Order of subject keys in a snapshot: by gallery, so each gallery's rows are one range."""
    return split_key(key)


class GalleryError(ValueError):
    """Base of the refusals of a gallery operation; `code` names it for clients."""

    code = "gallery_error"


class NoSuchGalleryError(GalleryError):
    code = "unknown_gallery"

    def __init__(self, gallery_id: str) -> None:
        super().__init__(f"no gallery {gallery_id!r}")
        self.gallery_id = gallery_id


class GalleryExistsError(GalleryError):
    code = "gallery_exists"

    def __init__(self, gallery_id: str) -> None:
        super().__init__(f"gallery {gallery_id!r} exists")
        self.gallery_id = gallery_id


class TooManyGalleriesError(GalleryError):
    code = "too_many_galleries"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the engine holds its limit of {limit} galleries (gallery.max_galleries); delete one first")
        self.limit = limit


class DefaultGalleryError(GalleryError):
    code = "default_gallery"

    def __init__(self) -> None:
        super().__init__(f"the gallery {DEFAULT_GALLERY!r} always exists; erase its subjects one by one instead")


@dataclasses.dataclass(frozen=True)
class GalleryRecord:
    """One gallery as the registry holds it. `policy` is a partial live config (thresholds, gates,
    duplicates) laid over the engine's; it is validated above the gallery layer."""

    gallery_id: str
    generation: int
    description: str = ""
    created_at: float = 0.0
    policy: dict = dataclasses.field(default_factory=dict)
    deleting: bool = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "GalleryRecord":
        return cls(**data)


def _default() -> GalleryRecord:
    return GalleryRecord(DEFAULT_GALLERY, 0)


class Registry:
    """The galleries that exist: a fold of shard 0's `GalleryEvent`s. Not thread-safe (the shard
    applies events under its write lock)."""

    def __init__(self, records: Iterable[GalleryRecord] = ()) -> None:
        self._records = {DEFAULT_GALLERY: _default()} | {r.gallery_id: r for r in records}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, gallery_id: str) -> GalleryRecord | None:
        return self._records.get(gallery_id)

    def records(self) -> list[GalleryRecord]:
        return sorted(self._records.values(), key=lambda r: r.gallery_id)

    def check(self, event: GalleryEvent, *, max_galleries: int) -> None:
        """Raise the refusal `event` meets, before it is logged."""
        if not re.fullmatch(GALLERY_ID_PATTERN, event.gallery_id):
            raise GalleryError(f"gallery id {event.gallery_id[:40]!r} does not match {GALLERY_ID_PATTERN}")
        current = self._records.get(event.gallery_id)
        if event.action == "create":
            if current is not None:
                raise GalleryExistsError(event.gallery_id)
            if len(self._records) >= max_galleries:
                raise TooManyGalleriesError(max_galleries)
            return
        if current is None:
            raise NoSuchGalleryError(event.gallery_id)
        if event.action in ("delete", "purge") and event.gallery_id == DEFAULT_GALLERY:
            raise DefaultGalleryError()
        if event.action == "update" and current.deleting:
            raise NoSuchGalleryError(event.gallery_id)

    def apply(self, seq: int, event: GalleryEvent) -> None:
        gallery_id, details = event.gallery_id, event.details
        if event.action == "create":
            self._records[gallery_id] = GalleryRecord(
                gallery_id, seq, details.get("description", ""), event.timestamp, details.get("policy", {})
            )
        elif event.action == "update":
            current = self._records[gallery_id]
            self._records[gallery_id] = dataclasses.replace(
                current, **{name: details[name] for name in ("description", "policy") if name in details}
            )
        elif event.action == "delete":
            self._records[gallery_id] = dataclasses.replace(self._records[gallery_id], deleting=True)
        else:  # purge: every shard has erased it
            self._records.pop(gallery_id, None)

    def to_json(self) -> list[dict]:
        return [r.to_json() for r in self.records()]

    @classmethod
    def from_json(cls, data: list[dict]) -> "Registry":
        return cls(GalleryRecord.from_json(item) for item in data)


def _erased_name(gallery_id: str) -> str:
    # A deleted gallery's id is not kept in storage as it was given (it may name a person or a case).
    return hashlib.sha256(gallery_id.encode()).hexdigest()[:32]


@dataclasses.dataclass
class ShardGalleries:
    """What a shard keeps about galleries besides their templates: the generation of each gallery
    it has erased (enrolments into it or an older one are refused), by a hash of the gallery id,
    and, on shard 0, the registry. Carried in the shard's snapshot (part `galleries.json`) and
    folded from its log after that."""

    erased: dict[str, int] = dataclasses.field(default_factory=dict)
    registry: Registry = dataclasses.field(default_factory=Registry)

    def erase(self, gallery_id: str, generation: int) -> None:
        name = _erased_name(gallery_id)
        self.erased[name] = max(generation, self.erased.get(name, -1))

    def is_erased(self, gallery_id: str, generation: int) -> bool:
        return self.erased.get(_erased_name(gallery_id), -1) >= generation

    def to_json(self) -> dict:
        return {"erased": dict(sorted(self.erased.items())), "registry": self.registry.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "ShardGalleries":
        return cls(dict(data["erased"]), Registry.from_json(data["registry"]))

    def is_initial(self) -> bool:
        """Nothing a store written before galleries would lack (so no snapshot part is needed)."""
        return self.to_json() == ShardGalleries().to_json()
