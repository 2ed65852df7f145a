"""The real photos a load run sends, sorted by what each is good for against the live gallery.

Before the run every photo is identified once. Every photo probes identify and analyze; a photo
with one face that passes every gate and matches a gallery subject probes verify (against that
subject) and names a subject to read; a photo with one such face that matches nobody can be
enrolled under a fresh subject id without being a duplicate, grouped by identity (its folder).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Photo:
    identity: str  # "<root folder>/<identity folder>": a person, across roots that may reuse names
    name: str
    data: bytes


def collect_photos(roots: list[Path], *, per_identity: int | None = None) -> list[Photo]:
    """`<root>/<identity>/<photo>` files, at most `per_identity` (sorted) per identity."""
    photos = []
    for root in roots:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:per_identity]
            photos += [Photo(f"{root.name}/{folder.name}", f.name, f.read_bytes()) for f in files]
    return photos


@dataclass
class Material:
    probes: list[Photo] = field(default_factory=list)
    verify_pairs: list[tuple[Photo, str]] = field(default_factory=list)
    gallery_subjects: list[str] = field(default_factory=list)
    enrol_photos: dict[str, list[Photo]] = field(default_factory=dict)

    def check(self) -> None:
        missing = [name for name, items in (("photos", self.probes), ("photos matching a gallery subject", self.verify_pairs),
                                            ("enrollable photos (matching nobody)", self.enrol_photos)) if not items]
        if missing:
            raise ValueError(f"the load needs {', '.join(missing)}: load a gallery first (ufme-ray demo) "
                             "and give photos of people in it and of people not in it")


def _clean_single_face(answer: dict) -> dict | None:
    """The identify answer's face when the photo holds exactly one and it passes every gate."""
    faces = answer["faces"]
    if len(faces) != 1 or any(gate["status"] == "fail" for gate in faces[0]["face"]["gates"].values()):
        return None
    return faces[0]


async def survey(http: httpx.AsyncClient, photos: list[Photo], *, concurrency: int = 4) -> Material:
    """Identify every photo once (closed loop; this is setup, not load) and sort them."""
    limit = asyncio.Semaphore(concurrency)

    async def identify(photo: Photo) -> dict:
        async with limit:
            response = await http.post("/api/v1/identify", files={"image": (photo.name, photo.data)})
        if response.status_code != 200:
            raise RuntimeError(f"survey: identify {photo.identity}/{photo.name} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    answers = await asyncio.gather(*(identify(photo) for photo in photos))
    material = Material(probes=list(photos))
    enrollable: dict[str, list[Photo]] = defaultdict(list)
    subjects = set()
    for photo, answer in zip(photos, answers):
        face = _clean_single_face(answer)
        if face is None:
            continue
        decision = face["decision"]
        if decision["status"] == "match":
            material.verify_pairs.append((photo, decision["subject_id"]))
            subjects.add(decision["subject_id"])
        elif decision["status"] == "unknown":
            enrollable[photo.identity].append(photo)
    material.gallery_subjects = sorted(subjects)
    material.enrol_photos = dict(enrollable)
    return material
