"""Biometric accuracy measures (ISO/IEC 19795 terms) over score arrays. Pure NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    far: float  # the target false-accept rate
    threshold: float  # accept when score >= threshold
    tar: float  # measured true-accept rate at that threshold
    measured_far: float


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The lowest threshold whose false-accept rate on `impostor` is at most `far` (accept: score >= t)."""
    # Keep the scores' own precision: a threshold nudged above a float32 score in float64 would
    # round back onto that score when compared against float32 scores.
    scores = np.sort(np.asarray(impostor, dtype=np.result_type(np.asarray(impostor).dtype, np.float32)))[::-1]
    if scores.size == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(far * scores.size))
    if allowed >= scores.size:
        return float(scores[-1])
    # Strictly above the (allowed+1)-th highest impostor score, so at most `allowed` accept.
    return float(np.nextafter(scores[allowed], scores.dtype.type(np.inf)))


def operating_point(genuine: np.ndarray, impostor: np.ndarray, far: float) -> OperatingPoint:
    threshold = threshold_at_far(impostor, far)
    return OperatingPoint(
        far=far,
        threshold=threshold,
        tar=float(np.mean(np.asarray(genuine) >= threshold)),
        measured_far=float(np.mean(np.asarray(impostor) >= threshold)),
    )


def pair_scores(embeddings: np.ndarray, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Genuine and impostor cosine scores over all unordered pairs of L2-normalised embeddings."""
    similarity = embeddings @ embeddings.T
    labels_array = np.asarray(labels)
    same = labels_array[:, None] == labels_array[None, :]
    upper = np.triu(np.ones_like(same, dtype=bool), k=1)
    return similarity[same & upper], similarity[~same & upper]


@dataclass(frozen=True)
class OpenSetResult:
    known_probes: int
    unknown_probes: int
    rank1: float  # closed-set: the right subject ranks first
    fpir_target: float
    threshold: float
    fnir: float  # known probes missed (wrong rank-1 or top score under threshold)
    fpir: float  # unknown probes whose top score reaches the threshold


def open_set_identification(
    gallery: np.ndarray,
    gallery_labels: list[str],
    probes: np.ndarray,
    probe_labels: list[str | None],
    fpir: float,
) -> OpenSetResult:
    """Open-set 1:N: probes with label None are not enrolled; FNIR measured at the threshold giving `fpir`."""
    scores = probes @ gallery.T
    best = scores.argmax(axis=1)
    top = scores.max(axis=1)
    gallery_array = np.asarray(gallery_labels)
    known = np.array([label is not None for label in probe_labels])
    correct = np.array([label is not None and gallery_array[b] == label for b, label in zip(best, probe_labels)])
    threshold = threshold_at_far(top[~known], fpir) if (~known).any() else -1.0
    hit = correct & (top >= threshold)
    return OpenSetResult(
        known_probes=int(known.sum()),
        unknown_probes=int((~known).sum()),
        rank1=float(correct[known].mean()),
        fpir_target=fpir,
        threshold=threshold,
        fnir=float(1.0 - hit[known].mean()),
        fpir=float((top[~known] >= threshold).mean()) if (~known).any() else 0.0,
    )
