"""Application metrics, exported with Serve's own on every node's metrics port (/metrics)."""

from __future__ import annotations

from ray.serve import metrics

LATENCY_BOUNDARIES_MS = [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


class ServiceMetrics:
    """Created once per gateway replica (Ray's metric objects must live in the replica)."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "ufme_requests", description="API requests by endpoint and HTTP status.", tag_keys=("endpoint", "status")
        )
        self.latency = metrics.Histogram(
            "ufme_request_latency_ms",
            description="API request latency by endpoint, milliseconds.",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("endpoint",),
        )
        self.gate_rejections = metrics.Counter(
            "ufme_gate_rejections", description="Faces refused by a gate.", tag_keys=("gate", "operation")
        )
        self.faces_per_image = metrics.Histogram(
            "ufme_faces_per_image", description="Faces detected per image.", boundaries=[0.5, 1.5, 2.5, 5.5, 10.5, 50.5]
        )
        # Tagged by key id: keys are created by operators and few, so the series stay bounded.
        self.rate_limited = metrics.Counter(
            "ufme_rate_limited", description="Requests refused (429) past their key's quota.", tag_keys=("key_id",)
        )
