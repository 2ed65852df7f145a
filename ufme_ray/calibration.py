"""Score calibration: embed labelled photos, then measure thresholds and false-match rates.

The result is a `ufme_ray.models.calibration.Calibration`, the data model a manifest entry embeds;
this module is the procedure that reads photos, so it may import vision (models may not).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ufme_ray.evaluation import operating_point, pair_scores
from ufme_ray.models.calibration import Calibration
from ufme_ray.vision.image import read_image_file


def labelled_embeddings(pipeline, faces_dir: Path, progress: bool = True) -> tuple[list[str], np.ndarray, list[Path]]:
    """The main face's embedding of every photo under faces_dir/<identity>/<photo> (any depth of sets).

    Identities are the photo's folder relative to faces_dir (`Name`, or `lfw/Name` one level up),
    so sets never collide. Folders starting with "_" (group photos) are skipped. Also returns the
    photos in which no face was found.
    """
    photos = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"})
    photos = [p for p in photos if not p.parent.name.startswith("_")]
    labels, vectors, missed = [], [], []
    for path in tqdm(photos, desc=f"embedding {faces_dir.name}", unit="img", disable=not progress):
        face = pipeline.analyze_decoded([read_image_file(str(path), pipeline.settings.image)])[0].main_face()
        if face is None:
            missed.append(path)
            continue
        labels.append(str(path.parent.relative_to(faces_dir)))
        vectors.append(face.embedding)
    return labels, np.stack(vectors), missed


def calibrate(labels: list[str], vectors: np.ndarray, fars: list[float], source: str):
    """The calibration and, per target FAR, the operating point (threshold, TAR, measured FAR)."""
    genuine, impostor = pair_scores(vectors, labels)
    points = [operating_point(genuine, impostor, far) for far in fars]
    return Calibration.from_scores(genuine, impostor, source), points


PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def main_faces(pipeline, folders: list[Path], progress: bool = True) -> tuple[list[tuple[Path, object]], list[Path]]:
    """(photo, main face analysis) for every photo under `folders` (group photos in "_" folders
    skipped), and the photos in which no face was found."""
    photos = sorted(p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    photos = [p for p in photos if not p.parent.name.startswith("_")]
    found, missed = [], []
    for path in tqdm(photos, desc="scoring photos", unit="img", disable=not progress):
        face = pipeline.analyze_decoded([read_image_file(str(path), pipeline.settings.image)])[0].main_face()
        (missed.append(path) if face is None else found.append((path, face)))
    return found, missed


def pad_error_rates(bona_fide: np.ndarray, attacks: np.ndarray, thresholds: list[float]) -> list[dict]:
    """ISO/IEC 30107-3 error rates of a liveness threshold (live if score >= threshold): BPCER, the
    share of bona fide photos refused, and APCER, the share of attacks accepted."""
    rows = []
    for threshold in thresholds:
        refused = int(np.sum(bona_fide < threshold))
        accepted = int(np.sum(attacks >= threshold))
        rows.append({
            "threshold": threshold,
            "bpcer": refused / len(bona_fide) if len(bona_fide) else None,
            "bona_fide_refused": refused,
            "apcer": accepted / len(attacks) if len(attacks) else None,
            "attacks_accepted": accepted,
        })
    return rows


def quality_levels(
    qualities: np.ndarray, labels: list[str], vectors: np.ndarray, match_threshold: float, refuse: dict[str, float]
) -> list[dict]:
    """Quality filter levels from a labelled photo set: each level's threshold refuses the given
    share of the set's photos; per level, the genuine pairs whose two photos pass it and the share
    of those that match at `match_threshold` (quality is worth filtering on if it rises)."""
    similarity = vectors @ vectors.T
    same = np.asarray(labels)[:, None] == np.asarray(labels)[None, :]
    genuine = same & np.triu(np.ones_like(same, dtype=bool), k=1)
    rows = []
    for level, share in [("none", 0.0), *refuse.items()]:
        threshold = float(np.quantile(qualities, share)) if share > 0 else float(qualities.min())
        kept = qualities >= threshold
        pairs = genuine & kept[:, None] & kept[None, :]
        matched = similarity[pairs] >= match_threshold
        rows.append({
            "level": level,
            "threshold": round(threshold, 4),
            "photos_refused": int((~kept).sum()),
            "genuine_pairs": int(pairs.sum()),
            "genuine_match_rate": round(float(matched.mean()), 4) if pairs.any() else None,
        })
    return rows
