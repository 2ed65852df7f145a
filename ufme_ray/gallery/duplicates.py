"""The duplicate screen of a batch of enrolments: which other subject each new face already is.

Pure: the caller searched the gallery for every face of the batch; the screen adds the faces the
batch itself accepts, in order, so that two enrolments of one face under different subject ids
in the same batch cannot both pass. Run batch after batch by one sequencer, it makes the check
and the enrolment one step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ufme_ray.gallery.merge import Candidate


@dataclass(frozen=True)
class Screened:
    """One enrolment of the batch: the other subject it matches, if any, and whether it goes in.

    A face matching one enrolled earlier in the same batch names that enrolment's position
    (`of_batch`); its template id is known only once the batch is written.
    """

    duplicate_of: Candidate | None
    accepted: bool
    of_batch: int | None = None


def screen(
    subject_ids: list[str],
    vectors: np.ndarray,
    gallery_candidates: list[list[Candidate]],
    threshold: float,
    *,
    reject: bool,
) -> list[Screened]:
    """Per enrolment, in order: the best other subject at or above `threshold` among the gallery's
    candidates and the batch's earlier accepted faces; refused (not accepted) under `reject`.

    `vectors` are L2-normalised (n, d); `gallery_candidates[i]` are subject-level candidates for
    `vectors[i]` (at least two, so one of another subject shows beside the face's own).
    """
    accepted_rows: list[int] = []
    screened: list[Screened] = []
    for i, subject_id in enumerate(subject_ids):
        found = [(c, None) for c in gallery_candidates[i] if c.subject_id != subject_id and c.score >= threshold]
        if accepted_rows:
            scores = vectors[accepted_rows] @ vectors[i]
            found += [
                (Candidate(subject_ids[row], float(score), -1), row)
                for row, score in zip(accepted_rows, scores.tolist())
                if subject_ids[row] != subject_id and score >= threshold
            ]
        duplicate, of_batch = max(found, key=lambda pair: pair[0].score, default=(None, None))
        accepted = duplicate is None or not reject
        if accepted:
            accepted_rows.append(i)
        screened.append(Screened(duplicate, accepted, of_batch))
    return screened


@dataclass(frozen=True)
class DuplicateCheck:
    """How an enrolment is screened: the similarity at which a face counts as another subject, and
    whether such a face is refused (`reject`) or enrolled and reported (`warn`)."""

    threshold: float
    reject: bool
