"""Every rendered manifest of both overlays validates: KubeRay kinds against the KubeRay 1.7 CRDs
(defaults applied first), core kinds with kubernetes-validate (strict), Prometheus Operator kinds
against a hand-written subset schema."""

from __future__ import annotations

import copy

import pytest

from tests.unit.k8s import schema_check
from tests.unit.k8s.conftest import CRD_DIR
from ufme_ray.k8s.kinds import KINDS

ENVS = ("staging", "production")


def _by_kind(manifests, kind):
    return [m for m in manifests if m["kind"] == kind]


@pytest.fixture(scope="module", autouse=True)
def _crds_present():
    if not (CRD_DIR / "ray.io_rayservices.yaml").is_file():
        pytest.fail(f"the KubeRay CRDs are needed in {CRD_DIR} (../shared/kuberay-crds beside the repo)")


@pytest.mark.parametrize("env", ENVS)
def test_every_kind_is_known_and_validated(rendered, env):
    kinds = {(m["apiVersion"], m["kind"]) for m in rendered[env]}
    assert kinds <= set(KINDS), kinds - set(KINDS)
    # nothing in the output escapes the three validators below
    assert {k for _, k in kinds} <= {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "PersistentVolumeClaim",
        "NetworkPolicy", "PodDisruptionBudget", "CronJob", "RayService", "PodMonitor", "PrometheusRule",
    }


@pytest.mark.parametrize("env", ENVS)
def test_rayservice_matches_the_kuberay_crd(rendered, env):
    (rayservice,) = _by_kind(rendered[env], "RayService")
    defaulted = schema_check.validate_crd_object(CRD_DIR, rayservice)
    assert schema_check.rayservice_problems(defaulted) == []
    # the defaults the API server would add are there (proof that defaulting ran)
    for group in defaulted["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["numOfHosts"] == 1


def test_raycronjob_component_matches_the_crd(rendered_with_raycronjob):
    (cron,) = _by_kind(rendered_with_raycronjob, "RayCronJob")
    defaulted = schema_check.validate_crd_object(CRD_DIR, cron)
    assert defaulted["spec"]["jobTemplate"]["submissionMode"] == "HTTPMode"
    assert defaulted["spec"]["jobTemplate"]["ttlSecondsAfterFinished"] == 0  # a CRD default, applied
    assert schema_check.raycronjob_problems(defaulted) == []
    assert cron["metadata"]["namespace"] == "ufme"
    (cronjob,) = _by_kind(rendered_with_raycronjob, "CronJob")
    assert cronjob["spec"]["suspend"] is True  # never both schedulers at once


def test_crd_check_catches_a_typo_and_a_wrong_type(rendered):
    (rayservice,) = _by_kind(rendered["production"], "RayService")
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["maxReplica"] = 5
    with pytest.raises(AssertionError, match=r"workerGroupSpecs\[1\]\.maxReplica: unknown field"):
        schema_check.validate_crd_object(CRD_DIR, broken)
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]["backend"] = "etcd"
    with pytest.raises(AssertionError, match="etcd"):
        schema_check.validate_crd_object(CRD_DIR, broken)
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    with pytest.raises(AssertionError, match="is not of type 'string'"):
        schema_check.validate_crd_object(CRD_DIR, broken)


def test_operator_rules_catch_gcs_misconfiguration(rendered):
    (rayservice,) = _by_kind(rendered["production"], "RayService")
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["redis-password"] = "x"
    assert any("redis-password" in p for p in schema_check.rayservice_problems(broken))


@pytest.mark.parametrize("env", ENVS)
def test_core_kinds_validate_strictly(rendered, env):
    core = [m for m in rendered[env] if m["apiVersion"].split("/")[0] in ("v1", "rbac.authorization.k8s.io", "networking.k8s.io", "policy", "batch")]
    assert len(core) >= 10
    for manifest in core:
        schema_check.validate_core(manifest)


@pytest.mark.parametrize("env", ENVS)
def test_pod_templates_inside_custom_resources_validate_strictly(rendered, env):
    checked = 0
    for manifest in rendered[env]:
        for where, template in schema_check.pod_templates(manifest):
            schema_check.validate_core(schema_check.as_pod_template(f"{manifest['kind'].lower()}-{where}", template))
            checked += 1
    assert checked == 5  # head, stages, shard, compaction, the CronJob's pod


def test_core_validation_rejects_an_unknown_field(rendered):
    (cronjob,) = _by_kind(rendered["production"], "CronJob")
    broken = copy.deepcopy(cronjob)
    broken["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(AssertionError):
        schema_check.validate_core(broken)


@pytest.mark.parametrize("env", ENVS)
def test_monitoring_objects_follow_the_subset_schema(rendered, env):
    monitoring = [m for m in rendered[env] if m["apiVersion"] == "monitoring.coreos.com/v1"]
    assert {m["kind"] for m in monitoring} == {"PodMonitor", "PrometheusRule"}
    for manifest in monitoring:
        schema_check.validate_monitoring(manifest)


def test_alert_expressions_are_well_formed_and_use_existing_metrics(rendered):
    (rule,) = _by_kind(rendered["production"], "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {"UfmeApiLatencyP95High", "UfmeApi5xxRateHigh", "UfmeShardNotReady", "UfmeCompactionFailed", "UfmeCompactionStale"} <= set(alerts)
    known = {
        "ray_ufme_request_latency_ms_bucket", "ray_ufme_requests_total", "ray_ufme_shard_ready",
        "kube_job_status_failed", "kube_cronjob_status_last_successful_time", "up",
    }
    for name, expr in alerts.items():
        assert schema_check.promql_problems(expr) == [], name
        assert schema_check.metric_names(expr) <= known, (name, schema_check.metric_names(expr) - known)
