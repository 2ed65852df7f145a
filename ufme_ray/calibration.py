"""Score calibration: from genuine/impostor score distributions to thresholds and false-match rates.

A calibration stores the impostor survival curve (the fraction of impostor pairs scoring at or
above each grid score). It answers both directions: the threshold for a target FAR, and the
estimated FAR of any score — so clients can reason in FAR instead of raw cosine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tqdm import tqdm

from ufme_ray.evaluation import operating_point, pair_scores
from ufme_ray.vision.image import read_image_file

GRID = np.round(np.arange(-0.30, 1.0001, 0.01), 2)


class Calibration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="What the scores were measured on.")
    genuine_pairs: int
    impostor_pairs: int
    grid: list[float] = Field(description="Scores at which the impostor survival is sampled.")
    impostor_far: list[float] = Field(description="Fraction of impostor pairs scoring >= each grid score.")

    @property
    def resolution(self) -> float:
        """The smallest FAR these pairs can measure: one impostor pair."""
        return 1.0 / self.impostor_pairs

    def estimated_far(self, score: float) -> float:
        """FAR at `score` (log-linear between grid points), never claimed below the resolution."""
        far = np.maximum(np.asarray(self.impostor_far), self.resolution)
        value = float(np.exp(np.interp(score, self.grid, np.log(far))))
        return max(value, self.resolution)

    @classmethod
    def from_scores(cls, genuine: np.ndarray, impostor: np.ndarray, source: str) -> "Calibration":
        ordered = np.sort(impostor)
        survival = 1.0 - np.searchsorted(ordered, GRID, side="left") / ordered.size
        return cls(
            source=source,
            genuine_pairs=int(genuine.size),
            impostor_pairs=int(impostor.size),
            grid=GRID.tolist(),
            impostor_far=[float(round(v, 8)) for v in survival],
        )


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
