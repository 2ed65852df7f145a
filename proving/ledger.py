"""What the service acknowledged, so that losses and resurrections can be counted.

The chaos load enrols fresh subjects (one photo each, never two live subjects with one photo),
deletes them, and identifies them. Every answer is booked here:

- enrol 201: the subject is *acknowledged*; it must be found until an acknowledged delete.
- delete 200: the subject is *erased*; from the moment of the answer on, it must never come back.
- anything else that is not a clear refusal (5xx, timeout, connection lost): the outcome is
  *ambiguous* (the write may or may not have landed). The subject keeps its photo and is deleted
  again later; an ambiguous subject is neither lost if absent nor resurrected if present.
  The request may even still be running inside the service (a replica finishing its work
  after the proxy in front of it died), so only a delete *sent* after `in_flight_bound_s` has
  passed settles it: an earlier delete (200 or 404) can be overtaken by the enrolment landing.

Pure bookkeeping, no I/O: the harness calls it from many threads.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Subject:
    subject_id: str
    photo: Path
    phase: str  # the phase whose request it was acknowledged (or left ambiguous) in


@dataclass
class Violation:
    kind: str  # "lost" or "resurrected"
    subject_id: str
    phase: str  # the phase of the acknowledgement that was broken
    detail: str


@dataclass
class Ledger:
    photos: list[Path]
    run_id: str
    seed: int = 0
    in_flight_bound_s: float = 120.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _free: list[Path] = field(default_factory=list)
    _counter: int = 0
    acknowledged: dict[str, Subject] = field(default_factory=dict)
    erased: dict[str, tuple[Subject, float]] = field(default_factory=dict)  # subject -> (it, time of the 200)
    ambiguous: dict[str, Subject] = field(default_factory=dict)
    _ambiguous_since: dict[str, float] = field(default_factory=dict)  # subject -> when its last unclear write was sent
    _busy: set[str] = field(default_factory=set)  # subjects with a delete in flight
    refused_photos: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._free = list(self.photos)
        self._random = random.Random(self.seed)

    # --- choosing what to do next ---------------------------------------------------------------

    def new_subject(self, phase: str) -> Subject | None:
        """A fresh subject id with a free photo (None when every photo is in use)."""
        with self._lock:
            if not self._free:
                return None
            photo = self._free.pop(self._random.randrange(len(self._free)))
            self._counter += 1
            return Subject(f"chaos-{self.run_id}-{self._counter:06d}", photo, phase)

    def subject_to_delete(self, now: float, *, ambiguous_only: bool = False) -> Subject | None:
        """An ambiguous subject that a delete can settle first, else an acknowledged one; marked busy."""
        with self._lock:
            settleable = {k: s for k, s in self.ambiguous.items() if self._settles(k, now)}
            for pool in (settleable,) if ambiguous_only else (settleable, self.acknowledged):
                candidates = [s for s in pool.values() if s.subject_id not in self._busy]
                if candidates:
                    chosen = candidates[self._random.randrange(len(candidates))]
                    self._busy.add(chosen.subject_id)
                    return chosen
            return None

    def subject_to_identify(self) -> Subject | None:
        with self._lock:
            live = [s for s in self.acknowledged.values() if s.subject_id not in self._busy]
            return live[self._random.randrange(len(live))] if live else None

    # --- booking answers ------------------------------------------------------------------------

    def enrolled(self, subject: Subject, phase: str) -> None:
        with self._lock:
            self.acknowledged[subject.subject_id] = Subject(subject.subject_id, subject.photo, phase)

    def enrol_refused(self, subject: Subject, *, photo_unusable: bool) -> None:
        """A clear refusal (4xx): nothing was written; the photo is free again unless it never passes."""
        with self._lock:
            if photo_unusable:
                self.refused_photos.add(subject.photo)
            else:
                self._free.append(subject.photo)

    def _settles(self, subject_id: str, delete_sent_at: float) -> bool:
        return delete_sent_at > self._ambiguous_since[subject_id] + self.in_flight_bound_s

    def enrol_ambiguous(self, subject: Subject, phase: str, sent_at: float) -> None:
        with self._lock:
            self.ambiguous[subject.subject_id] = Subject(subject.subject_id, subject.photo, phase)
            self._ambiguous_since[subject.subject_id] = sent_at

    def deleted(self, subject: Subject, phase: str, sent_at: float, answered_at: float) -> bool:
        """The service says the subject is gone (200, or 404 for an ambiguous one). Returns whether that
        settles it: from `answered_at` on it must never come back. An ambiguous subject whose unclear
        write may still be in flight stays ambiguous."""
        with self._lock:
            self._busy.discard(subject.subject_id)
            if subject.subject_id in self.ambiguous and not self._settles(subject.subject_id, sent_at):
                return False
            self.acknowledged.pop(subject.subject_id, None)
            self.ambiguous.pop(subject.subject_id, None)
            self._ambiguous_since.pop(subject.subject_id, None)
            self.erased[subject.subject_id] = (Subject(subject.subject_id, subject.photo, phase), answered_at)
            self._free.append(subject.photo)
            return True

    def delete_ambiguous(self, subject: Subject, phase: str, sent_at: float) -> None:
        """No clear answer: the subject may be gone or not (or go later); it is settled by a later delete."""
        with self._lock:
            self._busy.discard(subject.subject_id)
            if subject.subject_id in self.acknowledged:
                self.ambiguous[subject.subject_id] = self.acknowledged.pop(subject.subject_id)
            if subject.subject_id in self.ambiguous:
                self._ambiguous_since[subject.subject_id] = sent_at

    def delete_refused(self, subject: Subject) -> None:
        with self._lock:
            self._busy.discard(subject.subject_id)

    # --- checking answers -----------------------------------------------------------------------

    def erased_before(self, subject_ids: list[str], sent_at: float) -> list[Subject]:
        """Those of `subject_ids` whose delete was acknowledged before `sent_at`: must not be answered."""
        with self._lock:
            return [self.erased[s][0] for s in subject_ids if s in self.erased and self.erased[s][1] < sent_at]

    def is_acknowledged(self, subject_id: str) -> bool:
        with self._lock:
            return subject_id in self.acknowledged

    def snapshot(self) -> tuple[list[Subject], list[Subject], list[Subject]]:
        """(acknowledged, erased, ambiguous) at this moment."""
        with self._lock:
            return list(self.acknowledged.values()), [s for s, _ in self.erased.values()], list(self.ambiguous.values())


@dataclass
class GalleryLedger:
    """Galleries created and deleted under faults: which creations and deletions were acknowledged,
    and in which phase.

    A gallery whose create or delete got no clear answer is `unsettled` and left out of the final
    check; one created and acknowledged must exist at the end, one deleted and acknowledged must not.
    """

    run_id: str
    live: dict[str, str] = field(default_factory=dict)  # gallery id -> phase of its acknowledged create
    gone: dict[str, str] = field(default_factory=dict)  # gallery id -> phase of its acknowledged delete
    unsettled: set[str] = field(default_factory=set)
    _created: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_id(self) -> str:
        with self._lock:
            self._created += 1
            return f"chaos-{self.run_id}-{self._created}"

    def to_delete(self, rng: random.Random) -> str | None:
        with self._lock:
            return rng.choice(sorted(self.live)) if self.live else None

    def created(self, gallery_id: str, phase: str) -> None:
        with self._lock:
            self.live[gallery_id] = phase

    def deleted(self, gallery_id: str, phase: str) -> None:
        with self._lock:
            self.live.pop(gallery_id, None)
            self.gone[gallery_id] = phase

    def unclear(self, gallery_id: str, phase: str) -> None:
        with self._lock:
            self.live.pop(gallery_id, None)
            self.unsettled.add(gallery_id)
