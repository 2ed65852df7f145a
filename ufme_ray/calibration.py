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
