"""Drive the UFME-Ray RayService with the `kubernetes` client: apply, status, wait-ready.

Custom resources (group `ray.io`, version `v1`, and the other API groups the manifests use) go
through `CustomObjectsApi`; core objects through `CoreV1Api`. Every write is a server-side apply
(`PATCH … application/apply-patch+yaml`, field manager `ufme-ray`), so repeated applies converge and
a field another manager owns is reported as a conflict (HTTP 409) instead of being overwritten,
unless `force=True`.

Errors are typed (`ufme_ray.k8s.errors`): an unreachable API server or a missing kubeconfig is
ClusterUnreachableError, an API group the server does not serve (KubeRay or Prometheus Operator not
installed) is CrdMissingError, a 409 is ApplyConflictError.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from ufme_ray.k8s.errors import (
    ApplyConflictError,
    ClusterUnreachableError,
    CrdMissingError,
    K8sObjectNotFoundError,
    KubernetesApiError,
    NotReadyError,
)
from ufme_ray.k8s.kinds import CORE_METHOD, INSTALL_HINT, RAY_GROUP, RAY_VERSION, kind_of
from ufme_ray.k8s.render import NAMESPACE, RAYSERVICE_NAME
from ufme_ray.k8s.status import Condition, ServiceStatus, expected_shards
from ufme_ray.serve_config import APP_NAME

FIELD_MANAGER = "ufme-ray"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
AUTH_SECRET, AUTH_SECRET_KEY = "ufme-ray-auth", "auth_token"
RAYCLUSTER_PLACEHOLDER = "ufme-active-raycluster"
_TIMEOUT_S = (5.0, 30.0)  # connect, read


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason)


@dataclass(frozen=True)
class Applied:
    """One object after server-side apply."""

    kind: str
    name: str
    namespace: str | None
    resource_version: str | None
    generation: int | None
    note: str = ""


class K8sClient:
    """The RayService of one namespace, through one `kubernetes` ApiClient."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        namespace: str = NAMESPACE,
        rayservice: str = RAYSERVICE_NAME,
        field_manager: str = FIELD_MANAGER,
    ):
        self.api_client = api_client
        self.namespace = namespace
        self.rayservice = rayservice
        self.field_manager = field_manager
        self._custom = CustomObjectsApi(api_client)
        self._core = CoreV1Api(api_client)

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        in_cluster: bool = False,
        **kwargs: Any,
    ) -> "K8sClient":
        """A client from a kubeconfig (default ~/.kube/config or KUBECONFIG) or the pod's service account.

        Reads files only; contacts no server. Raises ClusterUnreachableError when there is no
        usable configuration.
        """
        configuration = Configuration()
        try:
            if in_cluster:
                kube_config.load_incluster_config(client_configuration=configuration)
            else:
                kube_config.load_kube_config(
                    config_file=str(kubeconfig) if kubeconfig else None,
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (kube_config.ConfigException, OSError) as exc:
            where = "in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '(default)'}"
            raise ClusterUnreachableError(f"no usable Kubernetes configuration ({where}): {exc}") from exc
        configuration.retries = 1
        return cls(ApiClient(configuration), **kwargs)

    @property
    def host(self) -> str:
        return self.api_client.configuration.host

    def close(self) -> None:
        self.api_client.close()

    # --- low level -------------------------------------------------------------------------------

    def _call(
        self, what: str, fn: Callable[..., Any], *args: Any, passthrough_status: int | None = None, **kwargs: Any
    ) -> Any:
        """fn(*args, **kwargs) with the client's errors turned into ufme_ray.k8s errors.

        With passthrough_status, an ApiException of that status returns its body (bytes) instead.
        """
        try:
            return fn(*args, _request_timeout=_TIMEOUT_S, **kwargs)
        except ApiException as exc:
            if passthrough_status is not None and exc.status == passthrough_status and exc.body:
                return exc.body
            message = _status_message(exc)
            if exc.status == 409:
                raise ApplyConflictError(
                    f"{what}: conflict (HTTP 409): {message}. Another field manager owns these fields; "
                    "re-run with --force-conflicts to take them over"
                ) from None
            if exc.status == 404:
                raise K8sObjectNotFoundError(f"{what}: not found (HTTP 404): {message}") from None
            if exc.status in (401, 403):
                raise KubernetesApiError(f"{what}: refused (HTTP {exc.status}): {message}; check your credentials and RBAC", status=exc.status) from None
            raise KubernetesApiError(f"{what}: HTTP {exc.status}: {message}", status=exc.status) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClusterUnreachableError(f"{what}: cannot reach the Kubernetes API server at {self.host}: {reason}") from None

    def _to_dict(self, result: Any) -> dict[str, Any]:
        return result if isinstance(result, dict) else self.api_client.sanitize_for_serialization(result)

    # --- preflight -------------------------------------------------------------------------------

    def check_kinds(self, manifests: Iterable[dict[str, Any]]) -> None:
        """Fail with CrdMissingError unless the server serves every custom kind in `manifests`."""
        needed: dict[tuple[str, str], set[str]] = {}
        for manifest in manifests:
            kind = kind_of(manifest)
            if kind.group and not kind.group.endswith("k8s.io") and kind.group not in ("batch", "policy"):
                needed.setdefault((kind.group, kind.version), set()).add(kind.plural)
        missing = []
        for (group, version), plurals in sorted(needed.items()):
            try:
                served = self._call(f"discover {group}/{version}", self._custom.get_api_resources, group, version)
            except K8sObjectNotFoundError:
                missing.append(f"{group}/{version} ({', '.join(sorted(plurals))}): the API group is not served; {INSTALL_HINT.get(group, 'install its CRDs')}")
                continue
            names = {r.name for r in (served.resources or [])}
            absent = sorted(plurals - names)
            if absent:
                hint = "enable the RayCronJob feature gate of the KubeRay operator" if "raycronjobs" in absent else INSTALL_HINT.get(group, "install its CRDs")
                missing.append(f"{group}/{version} has no {', '.join(absent)}: {hint}")
        if missing:
            raise CrdMissingError("the cluster lacks custom resources the manifests need:\n  " + "\n  ".join(missing))

    # --- apply -----------------------------------------------------------------------------------

    def apply_one(self, manifest: dict[str, Any], *, force: bool = False, dry_run: bool = False) -> Applied:
        """Server-side apply of one object. Raises ApplyConflictError (409) unless force."""
        kind = kind_of(manifest)
        name = manifest["metadata"]["name"]
        namespace = manifest["metadata"].get("namespace", self.namespace) if kind.namespaced else None
        what = f"apply {manifest['kind']} {namespace + '/' if namespace else ''}{name}"
        options: dict[str, Any] = {
            "field_manager": self.field_manager,
            "force": force,
            "_content_type": APPLY_CONTENT_TYPE,
        }
        if dry_run:
            options["dry_run"] = "All"
        if kind.group == "":
            method = getattr(self._core, f"patch_{CORE_METHOD[kind.plural]}")
            args = (name, namespace, manifest) if kind.namespaced else (name, manifest)
            result = self._call(what, method, *args, **options)
        elif kind.namespaced:
            result = self._call(
                what, self._custom.patch_namespaced_custom_object,
                kind.group, kind.version, namespace, kind.plural, name, manifest, **options,
            )
        else:
            result = self._call(
                what, self._custom.patch_cluster_custom_object, kind.group, kind.version, kind.plural, name, manifest, **options
            )
        meta = self._to_dict(result).get("metadata", {})
        return Applied(manifest["kind"], name, namespace, meta.get("resourceVersion"), meta.get("generation"))

    def apply(
        self,
        manifests: list[dict[str, Any]],
        *,
        force: bool = False,
        dry_run: bool = False,
        check_crds: bool = True,
        on_applied: Callable[[Applied], None] | None = None,
    ) -> list[Applied]:
        """Server-side apply of every manifest, namespace first, RayService before what refers to it.

        A RayCronJob whose clusterSelector holds the placeholder gets the RayService's active
        RayCluster name; with no active cluster yet it is applied suspended (re-run apply once the
        RayService is ready). Stops at the first error.
        """
        if check_crds:
            self.check_kinds(manifests)
        applied = []
        for manifest in sorted(manifests, key=lambda m: kind_of(m).order):
            note = ""
            if manifest.get("kind") == "RayCronJob":
                manifest, note = self._bind_raycronjob(manifest)
            result = self.apply_one(manifest, force=force, dry_run=dry_run)
            if note:
                result = Applied(**{**asdict(result), "note": note})
            applied.append(result)
            if on_applied is not None:
                on_applied(result)
        return applied

    def _bind_raycronjob(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], str]:
        template = manifest.get("spec", {}).get("jobTemplate", {})
        if (template.get("clusterSelector") or {}).get("ray.io/cluster") != RAYCLUSTER_PLACEHOLDER:
            return manifest, ""
        try:
            active = self._active_cluster()
        except K8sObjectNotFoundError:
            active = None
        bound = json.loads(json.dumps(manifest))
        if active is None:
            bound["spec"]["suspend"] = True
            return bound, "suspended: the RayService has no active RayCluster yet; re-run apply once it is ready"
        bound["spec"]["jobTemplate"]["clusterSelector"]["ray.io/cluster"] = active
        return bound, f"targets RayCluster {active}"

    # --- read ------------------------------------------------------------------------------------

    def get_rayservice(self) -> dict[str, Any]:
        """The RayService object. Raises K8sObjectNotFoundError if it does not exist."""
        try:
            result = self._call(
                f"get RayService {self.namespace}/{self.rayservice}",
                self._custom.get_namespaced_custom_object,
                RAY_GROUP, RAY_VERSION, self.namespace, "rayservices", self.rayservice,
            )
        except K8sObjectNotFoundError as exc:
            self.check_kinds([{"apiVersion": "ray.io/v1", "kind": "RayService"}])
            raise K8sObjectNotFoundError(f"{exc}; deploy it with `ufme-ray k8s apply --env <staging|production>`") from None
        return self._to_dict(result)

    def _active_cluster(self) -> str | None:
        return ((self.get_rayservice().get("status") or {}).get("activeServiceStatus") or {}).get("rayClusterName")

    def shard_pods(self, cluster: str) -> tuple[int, int]:
        """(ready, total) pods of the shard worker group of `cluster`."""
        pods = self._call(
            f"list shard pods of {cluster}",
            self._core.list_namespaced_pod,
            self.namespace,
            label_selector=f"ray.io/cluster={cluster},ray.io/group=shard",
        )
        items = self._to_dict(pods).get("items", [])
        ready = sum(
            1
            for pod in items
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])
        )
        return ready, len(items)

    def gallery_readiness(self) -> dict[str, Any]:
        """The service's GET /ready through the API server's service proxy: its JSON body.

        The gateway answers 503 with the same body until every shard has restored; that is a
        status, not an error, so its body is returned too.
        """
        what = f"GET /ready of service {self.rayservice}-serve-svc"
        response = self._call(
            what,
            self._core.connect_get_namespaced_service_proxy_with_path,
            f"{self.rayservice}-serve-svc:8000",
            self.namespace,
            "ready",
            _preload_content=False,
            passthrough_status=503,
        )
        status = getattr(response, "status", 200)
        raw = response.data if hasattr(response, "data") else response
        if status >= 400 and status != 503:
            raise KubernetesApiError(f"{what}: HTTP {status}: {str(raw)[:200]}", status=status)
        try:
            body = json.loads(raw)
        except (TypeError, ValueError):
            raise KubernetesApiError(f"{what}: not JSON: {str(raw)[:200]}") from None
        if not isinstance(body, dict):
            raise KubernetesApiError(f"{what}: unexpected answer {str(body)[:200]}")
        return body

    def token(self) -> str:
        """The Ray auth token from the ufme-ray-auth Secret (key auth_token)."""
        secret = self._to_dict(
            self._call(f"read Secret {self.namespace}/{AUTH_SECRET}", self._core.read_namespaced_secret, AUTH_SECRET, self.namespace)
        )
        data = (secret.get("data") or {}).get(AUTH_SECRET_KEY)
        if not data:
            raise KubernetesApiError(f"Secret {self.namespace}/{AUTH_SECRET} has no key {AUTH_SECRET_KEY}")
        return base64.b64decode(data).decode().strip()

    def status(self, *, check_gallery: bool = True, check_shards: bool = True) -> ServiceStatus:
        """RayService conditions, active/pending cluster, Serve app and deployments, shard readiness.

        check_shards lists the shard pods (RBAC: list pods); check_gallery asks the service's
        GET /ready through the API server (RBAC: get services/proxy). Without both, the only
        request is the GET of the RayService (all the compaction CronJob's Role allows).
        """
        rayservice = self.get_rayservice()
        status = rayservice.get("status") or {}
        active = status.get("activeServiceStatus") or {}
        pending = status.get("pendingServiceStatus") or {}
        app = (active.get("applicationStatuses") or {}).get(APP_NAME) or {}
        deployments = {name: d.get("status", "") for name, d in (app.get("serveDeploymentStatuses") or {}).items()}
        cluster = active.get("rayClusterName")
        ready_pods, total_pods = self.shard_pods(cluster) if cluster and check_shards else (0, 0)
        gallery = gallery_error = None
        if check_gallery and cluster:
            try:
                gallery = self.gallery_readiness()
            except (KubernetesApiError, K8sObjectNotFoundError) as exc:
                gallery_error = str(exc)
        elif not cluster:
            gallery_error = "no active cluster"
        return ServiceStatus(
            name=self.rayservice,
            namespace=self.namespace,
            conditions=[
                Condition(c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
                for c in status.get("conditions") or []
            ],
            active_cluster=cluster,
            pending_cluster=pending.get("rayClusterName"),
            app_status=app.get("status"),
            app_message=app.get("message", ""),
            deployments=deployments,
            expected_shards=expected_shards((rayservice.get("spec") or {}).get("serveConfigV2")) if check_shards else None,
            shard_pods_ready=ready_pods,
            shard_pods_total=total_pods,
            gallery=gallery,
            gallery_error=gallery_error,
            observed_generation=status.get("observedGeneration"),
            generation=(rayservice.get("metadata") or {}).get("generation"),
        )

    def wait_ready(
        self,
        *,
        timeout_s: float,
        poll_s: float = 5.0,
        check_gallery: bool = True,
        on_poll: Callable[[ServiceStatus], None] | None = None,
    ) -> ServiceStatus:
        """Poll status() until ready; returns it. Raises NotReadyError with the last status on timeout.

        Blocks up to timeout_s (plus one API round trip). ClusterUnreachableError and a missing
        RayService end the wait at once.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            current = self.status(check_gallery=check_gallery)
            if on_poll is not None:
                on_poll(current)
            if current.ready:
                return current
            if time.monotonic() + poll_s > deadline:
                raise NotReadyError(f"the RayService was not ready after {timeout_s:.0f} s; last status:\n{current.summary()}")
            time.sleep(poll_s)
