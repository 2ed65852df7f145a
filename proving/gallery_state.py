"""What "the gallery is unchanged" means, measured from outside through the API.

A shard's live template count says nothing was added or erased; its `applied_seq` (the last event
of its durable log that it applied) says nothing at all was written to it, not even an event with
no visible effect. The templates of a few known subjects (id, quality, enrolment time) say that
what was there is still there, untouched. Snapshot epochs are left out: a compaction changes the
representation, not the content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

KNOWN_SUBJECT_PREFIX = "bi-known-"
# deepface identities whose photos pass the enrolment gates and that no integration test module
# enrols; the corpus sends another one's face (id13), so that a wrongly accepted enrolment is a
# new template, never a refused duplicate of these.
KNOWN_IDENTITIES = ("id05", "id09", "id12", "id07")


@dataclass(frozen=True)
class GalleryFingerprint:
    shards: tuple[tuple[int, int | None, int | None], ...]  # (shard, live_templates, applied_seq)
    subjects: tuple[tuple[str, tuple[tuple[int, float, float], ...]], ...]  # subject -> (template, quality, enrolled_at)

    def differences(self, after: GalleryFingerprint) -> list[str]:
        """What changed from self to `after`, one line per shard or subject; [] when nothing did."""
        lines = []
        for (shard, count, seq), (_, count_after, seq_after) in zip(self.shards, after.shards):
            if (count, seq) != (count_after, seq_after):
                lines.append(f"shard {shard}: live templates {count} -> {count_after}, applied_seq {seq} -> {seq_after}")
        if len(self.shards) != len(after.shards):
            lines.append(f"shard count {len(self.shards)} -> {len(after.shards)}")
        before_subjects, after_subjects = dict(self.subjects), dict(after.subjects)
        for subject, templates in before_subjects.items():
            if after_subjects.get(subject) != templates:
                lines.append(f"subject {subject}: templates {templates} -> {after_subjects.get(subject)}")
        return lines

    def to_json(self) -> dict:
        return {
            "shards": [{"shard": s, "live_templates": n, "applied_seq": q} for s, n, q in self.shards],
            "subjects": {subject: [list(t) for t in templates] for subject, templates in self.subjects},
        }


def fingerprint(admin: httpx.Client, subjects_reader: httpx.Client, known_subjects: list[str]) -> GalleryFingerprint:
    response = admin.get("/api/v1/gallery")
    response.raise_for_status()
    gallery = response.json()
    if not gallery["ready"]:
        raise RuntimeError(f"the gallery is not ready: {gallery}")
    shards = tuple((s["shard"], s["live_templates"], s["applied_seq"]) for s in gallery["shards"])
    subjects = []
    for subject in known_subjects:
        found = subjects_reader.get(f"/api/v1/subjects/{subject}")
        found.raise_for_status()
        templates = tuple(sorted((t["template_id"], t["quality"], t["enrolled_at"]) for t in found.json()["templates"]))
        subjects.append((subject, templates))
    return GalleryFingerprint(shards, tuple(subjects))


@dataclass(frozen=True)
class KnownSubjects:
    subjects: list[str]  # readable through the API, fingerprinted
    enrolled: list[str]  # of those, the ones enrolled for this run (a caller may erase them afterwards)


def ensure_known_subjects(enroller: httpx.Client, faces_dir: Path, count: int = 3) -> KnownSubjects:
    """`count` subjects the API can read, enrolled from real live photos unless they already are.

    Demo subjects are not enough: the demo loader takes folder names as ids (LFW's contain '_',
    which the API's subject id pattern refuses), so the API cannot read them back.
    """
    known: list[str] = []
    enrolled: list[str] = []
    for identity in KNOWN_IDENTITIES:
        if len(known) == count:
            break
        subject = f"{KNOWN_SUBJECT_PREFIX}{identity}"
        if enroller.get(f"/api/v1/subjects/{subject}").status_code == 200:
            known.append(subject)
            continue
        for photo in sorted((faces_dir / "deepface" / identity).glob("*.jpg")):
            response = enroller.post(f"/api/v1/subjects/{subject}/faces", files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
            if response.status_code == 201:
                known.append(subject)
                enrolled.append(subject)
                break
            if response.status_code == 409:  # this face is already enrolled under another id: next identity
                break
    if not known:
        raise RuntimeError("no known subject could be enrolled to fingerprint the gallery")
    return KnownSubjects(known, enrolled)
