"""Validation of rendered manifests without an API server.

- KubeRay kinds: against `spec.versions[v1].schema.openAPIV3Schema` of the CRDs in ../shared/kuberay-crds,
  after applying the schema's `default:` values (as the API server does before validating), plus
  strict unknown-field detection (what `kubectl apply --server-side` with fieldValidation=Strict
  reports) and the few CEL rules / operator checks that concern these manifests.
- Core kinds (and the pod templates inside the RayService / CronJob): `kubernetes-validate`, strict,
  at the pinned Kubernetes version.
- monitoring.coreos.com kinds: their CRDs are not in ../shared, so a hand-written subset schema of
  the fields we use (unknown fields rejected), not the Prometheus Operator's own.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

KUBERNETES_VERSION = "1.33.0"  # pinned: kubernetes-validate 1.37 ships schemas 1.25 … 1.37
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}


@functools.lru_cache(maxsize=None)
def crd_schema(crd_dir: Path, kind: str) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~1 MB each
    crd = yaml.load((crd_dir / CRD_FILES[kind]).read_text(), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Fill absent fields that have a `default:` in the schema, recursively (API-server defaulting)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in value:
                if name not in properties:
                    value[name] = apply_defaults(extra, value[name])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def unknown_fields(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Paths of fields the schema does not declare (the API server would prune or reject them)."""
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return found
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if properties is not None and name in properties:
                found += unknown_fields(properties[name], item, f"{path}.{name}")
            elif isinstance(extra, dict):
                found += unknown_fields(extra, item, f"{path}.{name}")
            elif properties is not None or extra is False:
                found.append(f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{index}]")
    return found


def validate_crd_object(crd_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Default, then validate `manifest` against its CRD; returns the defaulted copy. Raises AssertionError."""
    schema = crd_schema(crd_dir, manifest["kind"])
    defaulted = apply_defaults(schema, copy.deepcopy(manifest))
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(defaulted), key=lambda e: list(e.absolute_path))
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:20]]
    problems += [f"{p}: unknown field" for p in unknown_fields(schema, defaulted)]
    if problems:
        raise AssertionError(f"{manifest['kind']} {manifest['metadata']['name']} fails its CRD schema:\n  " + "\n  ".join(problems))
    return defaulted


# --- the rules the CRD expresses in CEL, and the operator's own checks, that apply here ---------

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_RAYSERVICE_NAME = 47  # the KubeRay operator's limit (its cluster names get a suffix)


def cluster_spec_problems(spec: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    problems = []
    if spec.get("managedBy") not in (None, "ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"):
        problems.append("managedBy must be ray.io/kuberay-operator or kueue.x-k8s.io/multikueue")
    head = spec["headGroupSpec"]
    if not head["template"]["spec"].get("containers"):
        problems.append("headGroupSpec needs a container")
    names = [g["groupName"] for g in spec.get("workerGroupSpecs", [])]
    if len(set(names)) != len(names):
        problems.append(f"worker group names repeat: {names}")
    for group in spec.get("workerGroupSpecs", []):
        if not group["template"]["spec"].get("containers"):
            problems.append(f"worker group {group['groupName']} needs a container")
        low, high = group["minReplicas"], group["maxReplicas"]
        replicas = group.get("replicas", low)
        if not (0 <= low <= replicas <= high):
            problems.append(f"worker group {group['groupName']}: need minReplicas <= replicas <= maxReplicas, got {low}/{replicas}/{high}")
    gcs = spec.get("gcsFaultToleranceOptions")
    if gcs is not None:
        env = {e["name"] for e in head["template"]["spec"]["containers"][0].get("env", [])}
        if head.get("rayStartParams", {}).get("redis-password"):
            problems.append("redis-password in rayStartParams is refused with gcsFaultToleranceOptions")
        if env & {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS"}:
            problems.append("REDIS_PASSWORD / RAY_REDIS_ADDRESS env is refused with gcsFaultToleranceOptions")
        if annotations.get("ray.io/ft-enabled") or annotations.get("ray.io/external-storage-namespace"):
            problems.append("GCS FT annotations are refused with gcsFaultToleranceOptions")
        if not gcs.get("redisAddress"):
            problems.append("gcsFaultToleranceOptions.redisAddress is empty")
    if head.get("rayStartParams", {}).get("redis-username"):
        problems.append("redis-username in rayStartParams is refused")
    return problems


def rayservice_problems(manifest: dict[str, Any]) -> list[str]:
    name = manifest["metadata"]["name"]
    problems = []
    if len(name) > MAX_RAYSERVICE_NAME or not _DNS1035.match(name):
        problems.append(f"RayService name {name!r} must be a DNS-1035 label of at most {MAX_RAYSERVICE_NAME} characters")
    spec = manifest["spec"]
    if (spec["rayClusterConfig"]["headGroupSpec"].get("headService") or {}).get("metadata", {}).get("name"):
        problems.append("headGroupSpec.headService.metadata.name must not be set in a RayService")
    upgrade = (spec.get("upgradeStrategy") or {}).get("type")
    if upgrade not in (None, "NewCluster", "NewClusterWithIncrementalUpgrade", "None"):
        problems.append(f"upgradeStrategy.type {upgrade!r} is not a KubeRay upgrade type")
    return problems + cluster_spec_problems(spec["rayClusterConfig"], manifest["metadata"].get("annotations") or {})


def raycronjob_problems(manifest: dict[str, Any]) -> list[str]:
    template = manifest["spec"]["jobTemplate"]
    problems = []
    if not template.get("clusterSelector") and not template.get("rayClusterSpec"):
        problems.append("one of rayClusterSpec or clusterSelector must be set")
    deletion = template.get("deletionStrategy")
    if deletion is not None:
        legacy = "onSuccess" in deletion or "onFailure" in deletion
        if legacy and "deletionRules" in deletion:
            problems.append("deletionStrategy mixes legacy policies and deletionRules")
    if template.get("activeDeadlineSeconds") is not None and template["activeDeadlineSeconds"] <= 0:
        problems.append("activeDeadlineSeconds must be positive")
    if len(manifest["spec"]["schedule"].split()) != 5:
        problems.append("schedule must be a 5-field cron expression")
    return problems


# --- core kinds ----------------------------------------------------------------------------------


def validate_core(manifest: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise AssertionError(f"{manifest['kind']} {manifest['metadata'].get('name')}: {exc.message} at {list(exc.path)}") from None


def pod_templates(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod template) of every pod template inside a RayService, RayCronJob or CronJob."""
    if manifest["kind"] == "RayService":
        cluster = manifest["spec"]["rayClusterConfig"]
        found = [("head", cluster["headGroupSpec"]["template"])]
        found += [(g["groupName"], g["template"]) for g in cluster.get("workerGroupSpecs", [])]
        return found
    if manifest["kind"] == "CronJob":
        return [("job", manifest["spec"]["jobTemplate"]["spec"]["template"])]
    return []


def as_pod_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


# --- monitoring.coreos.com (hand-written subset, unknown fields rejected) --------------------------

_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _LABELS, "annotations": _LABELS},
}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod", "lowercase", "uppercase"]},
    },
}
MONITORING_SCHEMAS = {
    "PodMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PodMonitor"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["selector", "podMetricsEndpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _LABELS}},
                    "namespaceSelector": {"type": "object"},
                    "podMetricsEndpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "relabelings": {"type": "array", "items": _RELABEL},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _META,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["alert", "expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                            "expr": {"type": "string", "minLength": 1},
                                            "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d)$"},
                                            "labels": _LABELS,
                                            "annotations": _LABELS,
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def validate_monitoring(manifest: dict[str, Any]) -> None:
    jsonschema.validate(manifest, MONITORING_SCHEMAS[manifest["kind"]])


def promql_problems(expr: str) -> list[str]:
    """Cheap PromQL sanity: balanced brackets and quotes; no template leftovers."""
    problems = []
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    in_string = False
    for char in expr:
        if char == '"':
            in_string = not in_string
        elif not in_string and char in "([{":
            stack.append(char)
        elif not in_string and char in pairs:
            if not stack or stack.pop() != pairs[char]:
                problems.append(f"unbalanced {char!r}")
                break
    if in_string:
        problems.append("unterminated string")
    if stack:
        problems.append(f"unclosed {''.join(stack)}")
    return problems


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers followed by `{` or `[`, or alone in a call)."""
    return set(re.findall(r"\b((?:ray|kube|up)[a-zA-Z0-9_]*)\s*(?=[{\[)])", expr))
