"""A model's score calibration: the impostor score distribution, as the manifest embeds it.

A calibration stores the impostor survival curve (the fraction of impostor pairs scoring at or
above each grid score). It answers both directions: the threshold for a target FAR, and the
estimated FAR of any score — so clients can reason in FAR instead of raw cosine. Measuring one
from photos is `ufme_ray.calibration`'s job.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

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
