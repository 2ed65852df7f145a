"""The kubernetes client against a real HTTP server on 127.0.0.1 that answers the API paths it uses:
the requests it sends (paths, verbs, bodies, field manager, content type) and its handling of
404 / 409 / unreachable."""

from __future__ import annotations

import socket
import time

import pytest

from tests.unit.fake_http import FakeServer
from tests.unit.k8s.conftest import TOKEN, echo_apply, secret, serve_discovery, write_kubeconfig
from ufme_ray.k8s.client import FIELD_MANAGER, RAYCLUSTER_PLACEHOLDER, K8sClient
from ufme_ray.k8s.errors import (
    ApplyConflictError,
    ClusterUnreachableError,
    CrdMissingError,
    K8sObjectNotFoundError,
    KubernetesApiError,
    NotReadyError,
)

RS_PATH = "/apis/ray.io/v1/namespaces/ufme/rayservices/ufme"


def path_of(manifest) -> str:
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    paths = {
        "Namespace": f"/api/v1/namespaces/{name}",
        "ServiceAccount": f"/api/v1/namespaces/ufme/serviceaccounts/{name}",
        "ConfigMap": f"/api/v1/namespaces/ufme/configmaps/{name}",
        "PersistentVolumeClaim": f"/api/v1/namespaces/ufme/persistentvolumeclaims/{name}",
        "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/ufme/roles/{name}",
        "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/ufme/rolebindings/{name}",
        "NetworkPolicy": f"/apis/networking.k8s.io/v1/namespaces/ufme/networkpolicies/{name}",
        "PodDisruptionBudget": f"/apis/policy/v1/namespaces/ufme/poddisruptionbudgets/{name}",
        "CronJob": f"/apis/batch/v1/namespaces/ufme/cronjobs/{name}",
        "RayService": f"/apis/ray.io/v1/namespaces/ufme/rayservices/{name}",
        "RayCronJob": f"/apis/ray.io/v1/namespaces/ufme/raycronjobs/{name}",
        "PodMonitor": f"/apis/monitoring.coreos.com/v1/namespaces/ufme/podmonitors/{name}",
        "PrometheusRule": f"/apis/monitoring.coreos.com/v1/namespaces/ufme/prometheusrules/{name}",
    }
    return paths[kind]


def route_all(server: FakeServer, manifests) -> None:
    for manifest in manifests:
        server.on("PATCH", path_of(manifest), echo_apply)


def rayservice_object(*, ready=True, app="RUNNING", cluster="ufme-abc12", pending=None, num_shards=5):
    conditions = [
        {"type": "Ready", "status": "True" if ready else "False", "reason": "RunningServeDeployments" if ready else "Initializing",
         "message": "", "lastTransitionTime": "2026-11-21T09:00:00Z"},
        {"type": "UpgradeInProgress", "status": "True" if pending else "False", "reason": "NoPendingCluster",
         "message": "", "lastTransitionTime": "2026-11-21T09:00:00Z"},
    ]
    status = {
        "conditions": conditions,
        "observedGeneration": 3,
        "activeServiceStatus": {
            "rayClusterName": cluster,
            "applicationStatuses": {
                "ufme": {"status": app, "message": "", "serveDeploymentStatuses": {"Gateway": {"status": "HEALTHY"}, "Searcher": {"status": "HEALTHY"}}}
            },
        },
    }
    if pending:
        status["pendingServiceStatus"] = {"rayClusterName": pending}
    serve_config = (
        "applications:\n- name: ufme\n  import_path: ufme_ray.serving.app:build_app\n"
        f"  args:\n    shard_num_cpus: 0\n    settings:\n      gallery:\n        num_shards: {num_shards}\n"
    )
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "ufme", "namespace": "ufme", "generation": 3},
            "spec": {"serveConfigV2": serve_config}, "status": status}


def pods(ready: int, total: int):
    items = []
    for i in range(total):
        items.append({"metadata": {"name": f"ufme-abc12-shard-worker-{i}"},
                      "status": {"conditions": [{"type": "Ready", "status": "True" if i < ready else "False"}]}})
    return {"kind": "PodList", "apiVersion": "v1", "items": items}


def serve_status(server: FakeServer, *, rayservice=None, ready_pods=5, total_pods=5, gallery=(200, {"ready": True, "shards_ready": 5, "num_shards": 5, "detail": []})):
    serve_discovery(server)
    server.on("GET", RS_PATH, (200, rayservice or rayservice_object()))
    server.on("GET", "/api/v1/namespaces/ufme/pods", (200, pods(ready_pods, total_pods)))
    server.on("GET", "/api/v1/namespaces/ufme/services/ufme-serve-svc:8000/proxy/ready", gallery)


@pytest.fixture
def client(kubeconfig) -> K8sClient:
    return K8sClient.connect(kubeconfig=kubeconfig)


# --- apply ---------------------------------------------------------------------------------------


def test_apply_sends_server_side_apply_for_every_object_in_order(client, fake_server, rendered):
    manifests = rendered["production"]
    serve_discovery(fake_server)
    route_all(fake_server, manifests)
    applied = client.apply(manifests)

    patches = fake_server.sent("PATCH")
    assert len(patches) == len(manifests) == len(applied)
    assert [r.path for r in patches][0] == "/api/v1/namespaces/ufme"  # the namespace first
    order = [r.path.split("/")[-2] for r in patches]
    assert order.index("rayservices") < order.index("cronjobs")
    by_path = {r.path: r for r in patches}
    for manifest in manifests:
        request = by_path[path_of(manifest)]
        assert request.headers["content-type"] == "application/apply-patch+yaml"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.query["fieldManager"] == [FIELD_MANAGER]
        assert request.query["force"] == ["false"]
        assert "dryRun" not in request.query
        assert request.body == manifest  # the whole object, as rendered
    rayservice = next(a for a in applied if a.kind == "RayService")
    assert (rayservice.name, rayservice.namespace, rayservice.resource_version, rayservice.generation) == ("ufme", "ufme", "101", 1)
    # discovery before any write
    first_patch = fake_server.requests.index(patches[0])
    discovered = {r.path for r in fake_server.requests[:first_patch]}
    assert discovered == {"/apis/ray.io/v1", "/apis/monitoring.coreos.com/v1"}


def test_apply_dry_run_and_force_reach_the_server(client, fake_server, rendered):
    (rayservice,) = [m for m in rendered["staging"] if m["kind"] == "RayService"]
    serve_discovery(fake_server)
    route_all(fake_server, [rayservice])
    client.apply([rayservice], force=True, dry_run=True)
    (request,) = fake_server.sent("PATCH")
    assert request.query["force"] == ["true"] and request.query["dryRun"] == ["All"]


def test_missing_kuberay_crds_fail_before_any_write(client, fake_server, rendered):
    serve_discovery(fake_server, ray_plurals=None)  # /apis/ray.io/v1 answers 404
    with pytest.raises(CrdMissingError, match="ray.io/v1.*KubeRay operator"):
        client.apply(rendered["production"])
    assert fake_server.sent("PATCH") == []


def test_missing_raycronjob_kind_names_the_feature_gate(client, fake_server, rendered_with_raycronjob):
    serve_discovery(fake_server, ray_plurals=("rayclusters", "rayservices", "rayjobs"))
    with pytest.raises(CrdMissingError, match="raycronjobs.*RayCronJob feature gate"):
        client.apply(rendered_with_raycronjob)
    assert fake_server.sent("PATCH") == []


def test_missing_prometheus_operator_is_reported(client, fake_server, rendered):
    serve_discovery(fake_server, monitoring=False)
    with pytest.raises(CrdMissingError, match="monitoring.coreos.com/v1.*Prometheus Operator"):
        client.apply(rendered["staging"])


def test_conflict_409_is_reported_with_the_servers_message(client, fake_server, rendered):
    manifests = rendered["production"]
    serve_discovery(fake_server)
    route_all(fake_server, manifests)
    fake_server.on("PATCH", RS_PATH, (409, {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
        "message": 'Apply failed with 1 conflict: conflict with "kubectl-edit" using ray.io/v1: .spec.serveConfigV2',
    }))
    with pytest.raises(ApplyConflictError, match=r'kubectl-edit.*serveConfigV2.*--force-conflicts'):
        client.apply(manifests)
    # stopped at the RayService: what comes after it was not sent
    assert not [r for r in fake_server.sent("PATCH") if "/cronjobs/" in r.path]


def test_raycronjob_is_bound_to_the_active_cluster(client, fake_server, rendered_with_raycronjob):
    serve_discovery(fake_server)
    route_all(fake_server, rendered_with_raycronjob)
    fake_server.on("GET", RS_PATH, (200, rayservice_object(cluster="ufme-x7k2p")))
    applied = client.apply(rendered_with_raycronjob)
    (cron,) = [r for r in fake_server.sent("PATCH") if "/raycronjobs/" in r.path]
    assert cron.body["spec"]["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": "ufme-x7k2p"}
    assert "suspend" not in cron.body["spec"]
    assert next(a for a in applied if a.kind == "RayCronJob").note == "targets RayCluster ufme-x7k2p"


def test_raycronjob_is_suspended_until_a_cluster_exists(client, fake_server, rendered_with_raycronjob):
    serve_discovery(fake_server)
    route_all(fake_server, rendered_with_raycronjob)
    fake_server.on("GET", RS_PATH, (200, {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "ufme"}, "spec": {}}))
    client.apply(rendered_with_raycronjob)
    (cron,) = [r for r in fake_server.sent("PATCH") if "/raycronjobs/" in r.path]
    assert cron.body["spec"]["suspend"] is True
    assert cron.body["spec"]["jobTemplate"]["clusterSelector"] == {"ray.io/cluster": RAYCLUSTER_PLACEHOLDER}


# --- reachability and configuration ---------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_api_server_is_a_clear_error(tmp_path):
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{_closed_port()}")
    client = K8sClient.connect(kubeconfig=kubeconfig)
    started = time.monotonic()
    with pytest.raises(ClusterUnreachableError, match=r"cannot reach the Kubernetes API server at http://127\.0\.0\.1"):
        client.status()
    assert time.monotonic() - started < 10


def test_missing_kubeconfig_is_a_clear_error(tmp_path):
    with pytest.raises(ClusterUnreachableError, match="no usable Kubernetes configuration"):
        K8sClient.connect(kubeconfig=tmp_path / "absent")


def test_in_cluster_outside_a_pod_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterUnreachableError, match="in-cluster service account"):
        K8sClient.connect(in_cluster=True)


def test_forbidden_names_rbac(client, fake_server):
    serve_discovery(fake_server)
    fake_server.on("GET", RS_PATH, (403, {"kind": "Status", "code": 403, "reason": "Forbidden",
                                           "message": 'rayservices.ray.io "ufme" is forbidden: User "ci" cannot get resource'}))
    with pytest.raises(KubernetesApiError, match="HTTP 403.*forbidden.*RBAC"):
        client.get_rayservice()


# --- status --------------------------------------------------------------------------------------


def test_status_reports_conditions_cluster_app_and_shards(client, fake_server):
    serve_status(fake_server)
    status = client.status()
    assert status.ready
    assert status.active_cluster == "ufme-abc12" and status.pending_cluster is None
    assert status.app_status == "RUNNING" and status.deployments == {"Gateway": "HEALTHY", "Searcher": "HEALTHY"}
    assert (status.expected_shards, status.shard_pods_ready, status.shard_pods_total) == (5, 5, 5)
    assert status.gallery == {"ready": True, "shards_ready": 5, "num_shards": 5, "detail": []}
    (pods_request,) = fake_server.sent("GET", "/api/v1/namespaces/ufme/pods")
    assert pods_request.query["labelSelector"] == ["ray.io/cluster=ufme-abc12,ray.io/group=shard"]
    assert "READY" in status.summary() and "shard pods ready: 5/5 (expected 5)" in status.summary()


def test_status_reads_the_gateways_503_readiness_body(client, fake_server):
    serve_status(fake_server, ready_pods=5, gallery=(503, {"ready": False, "shards_ready": 3, "num_shards": 5, "detail": []}))
    status = client.status()
    assert status.gallery == {"ready": False, "shards_ready": 3, "num_shards": 5, "detail": []}
    assert not status.ready
    assert "gallery: 3/5 shards restored" in status.summary()


def test_status_when_the_serve_service_is_missing(client, fake_server):
    serve_status(fake_server, gallery=(404, {"kind": "Status", "code": 404, "message": 'services "ufme-serve-svc" not found'}))
    status = client.status()
    assert status.gallery is None and "not found" in status.gallery_error
    # best effort: an unanswered GET /ready is reported, and conditions, app and pods decide readiness
    assert status.app_status == "RUNNING" and status.ready
    assert "gallery: not checked" in status.summary()


def test_status_not_ready_while_a_shard_pod_is_missing(client, fake_server):
    serve_status(fake_server, ready_pods=4, total_pods=5)
    assert not client.status().ready


def test_status_of_a_missing_rayservice(client, fake_server):
    serve_discovery(fake_server)  # CRDs served, object absent: a 404 on the object
    with pytest.raises(K8sObjectNotFoundError, match="ufme-ray k8s apply"):
        client.status()


def test_status_without_kuberay_says_so(client, fake_server):
    with pytest.raises(CrdMissingError, match="KubeRay"):
        client.status()


def test_wait_ready_polls_until_ready(client, fake_server):
    serve_status(fake_server)
    answers = iter([rayservice_object(ready=False, app="DEPLOYING"), rayservice_object(ready=False, app="DEPLOYING")])
    fake_server.on("GET", RS_PATH, lambda _: (200, next(answers, rayservice_object())))
    seen = []
    status = client.wait_ready(timeout_s=30, poll_s=0.01, on_poll=seen.append)
    assert status.ready
    assert [s.app_status for s in seen] == ["DEPLOYING", "DEPLOYING", "RUNNING"]


def test_wait_ready_times_out_with_the_last_status(client, fake_server):
    serve_status(fake_server, rayservice=rayservice_object(ready=False, app="DEPLOY_FAILED"))
    with pytest.raises(NotReadyError, match="DEPLOY_FAILED"):
        client.wait_ready(timeout_s=0.05, poll_s=0.01)


def test_token_is_read_from_the_auth_secret(client, fake_server):
    fake_server.on("GET", "/api/v1/namespaces/ufme/secrets/ufme-ray-auth", (200, secret("ray-token-123")))
    assert client.token() == "ray-token-123"
