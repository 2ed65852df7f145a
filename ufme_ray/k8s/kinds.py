"""The kinds of object the kuberay/ manifests contain, and how to reach each on the API server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ufme_ray.k8s.errors import KubernetesApiError

RAY_GROUP, RAY_VERSION = "ray.io", "v1"


@dataclass(frozen=True)
class Kind:
    """How to reach one kind of object on the API server."""

    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    order: int  # apply order: namespace and identities first, workloads after their config

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# Every kind the kuberay/ manifests contain. An unknown kind is an error, never guessed.
KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "Namespace"): Kind("", "v1", "namespaces", False, 0),
    ("v1", "ServiceAccount"): Kind("", "v1", "serviceaccounts", True, 1),
    ("rbac.authorization.k8s.io/v1", "Role"): Kind("rbac.authorization.k8s.io", "v1", "roles", True, 2),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): Kind("rbac.authorization.k8s.io", "v1", "rolebindings", True, 3),
    ("v1", "ConfigMap"): Kind("", "v1", "configmaps", True, 4),
    ("v1", "PersistentVolumeClaim"): Kind("", "v1", "persistentvolumeclaims", True, 4),
    ("networking.k8s.io/v1", "NetworkPolicy"): Kind("networking.k8s.io", "v1", "networkpolicies", True, 5),
    ("policy/v1", "PodDisruptionBudget"): Kind("policy", "v1", "poddisruptionbudgets", True, 5),
    ("ray.io/v1", "RayService"): Kind(RAY_GROUP, RAY_VERSION, "rayservices", True, 6),
    ("batch/v1", "CronJob"): Kind("batch", "v1", "cronjobs", True, 7),
    ("ray.io/v1", "RayCronJob"): Kind(RAY_GROUP, RAY_VERSION, "raycronjobs", True, 7),
    ("monitoring.coreos.com/v1", "PodMonitor"): Kind("monitoring.coreos.com", "v1", "podmonitors", True, 8),
    ("monitoring.coreos.com/v1", "PrometheusRule"): Kind("monitoring.coreos.com", "v1", "prometheusrules", True, 8),
}
# Core-group kinds: the CoreV1Api method suffix for each plural.
CORE_METHOD = {
    "namespaces": "namespace",
    "serviceaccounts": "namespaced_service_account",
    "configmaps": "namespaced_config_map",
    "persistentvolumeclaims": "namespaced_persistent_volume_claim",
}
# What to install when a group is not served.
INSTALL_HINT = {
    RAY_GROUP: "install the KubeRay operator (1.7) with its CRDs (README: Deploy on Kubernetes)",
    "monitoring.coreos.com": "install the Prometheus Operator CRDs (kube-prometheus-stack), or leave monitoring.yaml out",
}


def kind_of(manifest: dict[str, Any]) -> Kind:
    key = (manifest.get("apiVersion", ""), manifest.get("kind", ""))
    if key not in KINDS:
        raise KubernetesApiError(f"cannot apply {key[1] or '?'} ({key[0] or 'no apiVersion'}): not a kind of the UFME-Ray manifests")
    return KINDS[key]
