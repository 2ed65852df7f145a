"""The demo gallery: enrol `<subject>/<photo>` files from a folder on the gateway's machine."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from ufme_ray.gallery.galleries import DEFAULT_GALLERY
from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN
from ufme_ray.orchestration.errors import DomainError, NoDemoFolderError
from ufme_ray.orchestration.results import DemoLoad, Skipped
from ufme_ray.vision.errors import ImageError

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


class DemoLoader:
    def __init__(
        self,
        enrol: Callable[[str, bytes, str], Awaitable[object]],
        *,
        default_folder: Path | None,
        max_bytes: int,
    ):
        self._enrol = enrol
        self._default_folder = default_folder
        self._max_bytes = max_bytes

    async def load(
        self, folder: str | None, *, images_per_subject: int, subjects: list[str] | None, gallery_id: str = DEFAULT_GALLERY
    ) -> DemoLoad:
        """Enrol up to `images_per_subject` photos of each subject folder into the gallery."""
        root = Path(folder) if folder else self._default_folder
        if root is None:
            raise NoDemoFolderError("no folder given and no demo_dir configured")
        if not root.is_dir():
            raise NoDemoFolderError(f"{root} is not a folder on the gateway's machine")
        wanted = None if subjects is None else set(subjects)
        subjects_enrolled = templates = 0
        skipped: list[Skipped] = []
        for subject_dir in sorted(p for p in root.iterdir() if p.is_dir() and (wanted is None or p.name in wanted)):
            if not re.fullmatch(SUBJECT_ID_PATTERN, subject_dir.name):  # the API could not read or erase it
                skipped.append(Skipped(str(subject_dir), "invalid_subject_id"))
                continue
            count = 0
            for photo in sorted(p for p in subject_dir.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS):
                if count >= images_per_subject:
                    break
                try:
                    # One byte over the limit is enough for the decoder to refuse it as too large.
                    await self._enrol(subject_dir.name, photo.read_bytes()[: self._max_bytes + 1], gallery_id)
                    count += 1
                except (DomainError, ImageError) as exc:  # reported per file; the load goes on
                    skipped.append(Skipped(str(photo), exc.code))
            subjects_enrolled += count > 0
            templates += count
        return DemoLoad(str(root), subjects_enrolled, templates, skipped)
