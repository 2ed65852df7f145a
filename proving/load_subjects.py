"""The subjects a load run enrols and deletes, so that the gallery stays bounded.

An enrolment takes a fresh subject id and, when there is one, a photo of an identity with no
load subject stored or in flight, so it is not a duplicate. When every identity is enrolled (the
mix enrols faster than it deletes, so this is the steady state) it sends a photo of an identity
already stored: the right answer is 409 duplicate_face, the duplicate check under load. Deletes
erase the oldest subject the load enrolled, never one it did not, so the gallery holds at most
about one load subject per identity. Everything runs on one event loop: no locks.
"""

from __future__ import annotations

import random
from collections import Counter, deque

from proving.load_material import Photo


class LoadSubjects:
    def __init__(self, enrol_photos: dict[str, list[Photo]], run_tag: str, rng: random.Random):
        self._photos = enrol_photos
        self._run_tag = run_tag
        self._rng = rng
        self._count = 0
        self._in_flight: Counter[str] = Counter()  # enrolments sent, not answered, per identity
        self._stored: Counter[str] = Counter()  # load subjects in the gallery per identity
        self._enrolled: deque[tuple[str, str]] = deque()  # (subject_id, identity), oldest first
        self._unsettled: set[str] = set()  # subjects whose enrol or delete got no clear answer

    def next_enrolment(self) -> tuple[str, Photo]:
        self._count += 1
        subject_id = f"load-{self._run_tag}-{self._count:06d}"
        identities = sorted(self._photos)
        free = [i for i in identities if not self._in_flight[i] and not self._stored[i]]
        stored = [i for i in identities if self._stored[i]]
        identity = self._rng.choice(free or stored or identities)
        self._in_flight[identity] += 1
        return subject_id, self._rng.choice(self._photos[identity])

    def enrol_answered(self, subject_id: str, photo: Photo, status: int | None) -> None:
        """`status` None: no answer (timeout, connection error), so the subject may exist."""
        self._in_flight[photo.identity] -= 1
        if status == 201:
            self._stored[photo.identity] += 1
            self._enrolled.append((subject_id, photo.identity))
        elif status is None:
            self._unsettled.add(subject_id)

    def next_deletion(self) -> str | None:
        """The oldest subject the load enrolled, or None when it holds none."""
        if not self._enrolled:
            return None
        subject_id, identity = self._enrolled.popleft()
        self._stored[identity] -= 1
        return subject_id

    def delete_answered(self, subject_id: str, status: int | None) -> None:
        if status != 200:
            self._unsettled.add(subject_id)  # erased after the run

    def leftovers(self) -> list[str]:
        """Subjects to erase after the run: still enrolled, or of unknown fate."""
        return sorted({subject for subject, _ in self._enrolled} | self._unsettled)
