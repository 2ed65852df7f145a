"""The typed errors of ufme_ray.k8s; each message says what failed and what to do."""

from __future__ import annotations


class K8sError(RuntimeError):
    """Base of every ufme_ray.k8s error."""


class RenderError(K8sError):
    """The manifests cannot be rendered (missing files, kustomize failure, stale generated file)."""


class ClusterUnreachableError(K8sError):
    """No answer from the Kubernetes API server (or no usable kubeconfig / in-cluster config)."""


class CrdMissingError(K8sError):
    """The API server does not serve a custom resource kind the manifests need."""


class ApplyConflictError(K8sError):
    """Server-side apply refused: another field manager owns fields we set (HTTP 409)."""


class KubernetesApiError(K8sError):
    """Any other error status from the API server."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class NotReadyError(K8sError):
    """The RayService is not ready: not in time, or not for a compaction (the message says how)."""


class CompactionError(K8sError):
    """The compaction job's settings cannot be taken from the RayService (its serveConfigV2)."""


class K8sObjectNotFoundError(K8sError):
    """The object (e.g. the RayService) does not exist in the namespace."""
