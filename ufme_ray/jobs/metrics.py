"""The compaction job's metrics (Ray's metrics API, exported as `ray_ufme_compaction_*`).

Recorded once, at the end of a run, by the job's driver; Ray flushes them when the driver exits.
"""

from __future__ import annotations

from ray.util import metrics


class CompactionMetrics:
    def __init__(self) -> None:
        self._runs = metrics.Counter(
            "ufme_compaction_runs_total", "compaction runs by outcome (compacted, skipped, failed)", tag_keys=("status",)
        )
        self._duration = metrics.Gauge("ufme_compaction_duration_seconds", "duration of the last compaction run")
        self._vectors_in = metrics.Gauge(
            "ufme_compaction_vectors_in", "vectors read by the last compaction (snapshot + logged enrolments)"
        )
        self._vectors_dropped = metrics.Gauge(
            "ufme_compaction_vectors_dropped", "vectors of deleted subjects the last compaction left out"
        )
        self._epoch = metrics.Gauge("ufme_compaction_epoch", "snapshot epoch the last successful compaction made current")

    def record(self, *, status: str, duration_s: float, vectors_in: int, vectors_dropped: int, epoch: int | None) -> None:
        self._runs.inc(1, {"status": status})
        self._duration.set(duration_s)
        if status == "compacted":
            self._vectors_in.set(vectors_in)
            self._vectors_dropped.set(vectors_dropped)
            self._epoch.set(epoch)
