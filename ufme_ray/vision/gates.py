"""Gate decisions: which threshold each score met or missed, resolved from config and manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ufme_ray.config import Thresholds
from ufme_ray.models.manifest import ModelSpec

# not_applicable: scored and reported, but the photo is not what the gate judges (a stored photo
# is no live capture), so it cannot fail.
GateStatus = Literal["pass", "fail", "not_configured", "not_applicable"]


@dataclass(frozen=True)
class ResolvedThresholds:
    """Thresholds in force: config values, or the chosen model's manifest default where unset.

    A stage that is not configured has threshold None and its gate reports "not_configured".
    """

    detection_min: float
    similarity_min: float
    quality_min: float | None
    liveness_min: float | None
    morph_max: float | None

    @classmethod
    def resolve(
        cls,
        configured: Thresholds,
        *,
        detector: ModelSpec,
        embedder: ModelSpec,
        quality: ModelSpec | None,
        liveness: list[ModelSpec],
        morph: ModelSpec | None,
    ) -> "ResolvedThresholds":
        def pick(value: float | None, spec: ModelSpec | None) -> float | None:
            if spec is None:
                return None
            return value if value is not None else spec.default_threshold

        return cls(
            detection_min=pick(configured.detection_min, detector),
            similarity_min=pick(configured.similarity_min, embedder),
            quality_min=pick(configured.quality_min, quality),
            liveness_min=pick(configured.liveness_min, liveness[0] if liveness else None),
            morph_max=pick(configured.morph_max, morph),
        )

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: `score` compared by `rule` against `threshold`."""

    status: GateStatus
    score: float | None
    threshold: float | None
    rule: Literal[">=", "<"]

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def _at_least(score: float | None, threshold: float | None) -> GateResult:
    if score is None or threshold is None:
        return GateResult("not_configured", None, None, ">=")
    return GateResult("pass" if score >= threshold else "fail", score, threshold, ">=")


def _below(score: float | None, threshold: float | None) -> GateResult:
    if score is None or threshold is None:
        return GateResult("not_configured", None, None, "<")
    return GateResult("pass" if score < threshold else "fail", score, threshold, "<")


def evaluate_gates(
    thresholds: ResolvedThresholds, *, quality: float | None, liveness: float | None, morph: float | None
) -> dict[str, GateResult]:
    """The quality, liveness and morph gates for one face, in the order a rejection names them."""
    return {
        "quality": _at_least(quality, thresholds.quality_min),
        "liveness": _at_least(liveness, thresholds.liveness_min),
        "morph": _below(morph, thresholds.morph_max),
    }
