"""What the rendered overlays say: serveConfigV2 from serve_config.yaml (one source), sizes as the
original deployment, shard placement, compaction schedule, security, budgets and policies."""

from __future__ import annotations

import json

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.unit.k8s.conftest import REPO_ROOT
from tests.unit.k8s.documented import OVERRIDDEN_ARGS, OVERRIDDEN_AUTOSCALING, SHARDS
from ufme_ray.config import UfmeSettings
from ufme_ray.k8s import render
from ufme_ray.k8s.errors import RenderError
from ufme_ray.serve_config import app_args

ENVS = ("staging", "production")


def one(manifests, kind, name=None):
    return render.find(manifests, kind, name)


def groups(rayservice):
    return {g["groupName"]: g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]}


def ufme_app(config):
    (app,) = [a for a in config["applications"] if a["name"] == "ufme"]
    return app


def config_env(manifests):
    (config_map,) = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("ufme-config-")]
    return config_map["data"]


# --- one source for the Serve config -------------------------------------------------------------


def test_generated_files_are_up_to_date(layout):
    stale = render.sync(layout, check=True)
    assert stale == [], f"run `ufme-ray k8s sync`: {stale}"


def test_base_serve_config_is_serve_config_yaml_verbatim(layout):
    base = render.kustomize(layout.kuberay_dir / "base")
    assert one(base, "RayService", "ufme")["spec"]["serveConfigV2"] == (REPO_ROOT / "serve_config.yaml").read_text()


@pytest.mark.parametrize("env", ENVS)
def test_overlay_serve_config_is_serve_config_yaml_plus_documented_overrides(rendered, env):
    rendered_config = yaml.safe_load(one(rendered[env], "RayService", "ufme")["spec"]["serveConfigV2"])
    source = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())
    app = ufme_app(rendered_config)
    for key, value in OVERRIDDEN_ARGS[env].items():
        assert app["args"][key] == value, key
    assert app["args"]["settings"]["gallery"]["num_shards"] == SHARDS[env]
    deployments = {d["name"]: d for d in app["deployments"]}
    for name, autoscaling in OVERRIDDEN_AUTOSCALING[env].items():
        assert deployments[name]["autoscaling_config"] == autoscaling, name
    # Put back what serve_config.yaml says where the overrides above apply: what is left must be
    # serve_config.yaml exactly (nothing else was changed).
    stripped, original = app, ufme_app(source)
    for key in OVERRIDDEN_ARGS[env]:
        if key in original["args"]:
            stripped["args"][key] = original["args"][key]
        else:
            stripped["args"].pop(key)
    stripped["args"]["settings"]["gallery"]["num_shards"] = original["args"]["settings"]["gallery"]["num_shards"]
    for deployment in stripped["deployments"]:
        if deployment["name"] in OVERRIDDEN_AUTOSCALING[env]:
            source_deployment = next(d for d in original["deployments"] if d["name"] == deployment["name"])
            deployment["autoscaling_config"] = source_deployment["autoscaling_config"]
    assert rendered_config == source


@pytest.mark.parametrize("env", ENVS)
def test_overlay_serve_config_loads_into_ray_and_the_app_models(rendered, env, monkeypatch):
    monkeypatch.delenv("UFME_GALLERY__NUM_SHARDS", raising=False)
    config = yaml.safe_load(one(rendered[env], "RayService", "ufme")["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)  # what `serve deploy` / KubeRay send to the dashboard
    args = app_args(config)
    settings = UfmeSettings.load(**args.settings)
    assert settings.gallery.num_shards == args.num_shards == SHARDS[env]
    assert args.shard_resources == {"ufme_shard": 1.0}


@pytest.mark.parametrize("env", ENVS)
def test_environment_shard_count_agrees_with_the_serve_config(rendered, env):
    assert config_env(rendered[env])["UFME_GALLERY__NUM_SHARDS"] == str(SHARDS[env])


def test_overrides_refuse_unknown_names():
    config = {"applications": [{"name": "ufme", "args": {}, "deployments": [{"name": "Gateway"}]}]}
    with pytest.raises(RenderError, match="application 'nope'"):
        render.apply_overrides(config, {"applications": {"nope": {}}})
    with pytest.raises(RenderError, match="deployment 'Gatewy'"):
        render.apply_overrides(config, {"applications": {"ufme": {"deployments": {"Gatewy": {"x": 1}}}}})


def test_render_refuses_a_stale_generated_file(layout, tmp_path):
    import shutil

    copy_root = tmp_path / "repo"
    shutil.copytree(layout.kuberay_dir, copy_root / "kuberay")
    (copy_root / "serve_config.yaml").write_text(layout.serve_config.read_text().replace("max_ongoing_requests: 64", "max_ongoing_requests: 65", 1))
    stale_layout = render.Layout(copy_root / "serve_config.yaml", copy_root / "kuberay")
    with pytest.raises(RenderError, match="ufme-ray k8s sync"):
        render.render("staging", layout=stale_layout)
    assert len(render.sync(stale_layout)) == 3
    manifests = render.render("staging", layout=stale_layout)
    assert "max_ongoing_requests: 65" in one(manifests, "RayService")["spec"]["serveConfigV2"]


def test_image_override_reaches_every_container(layout):
    manifests = render.render("production", layout=layout, image="ghcr.io/acme/ufme-ray@sha256:" + "a" * 64)
    images = set()
    for manifest in manifests:
        for text in [json.dumps(manifest)]:
            images |= {part.split('"')[0] for part in text.split('"image": "')[1:]}
    assert images == {"ghcr.io/acme/ufme-ray@sha256:" + "a" * 64}


@pytest.mark.parametrize(
    ("image", "repository"),
    [("ufme-ray", "ufme-ray"), ("reg:5000/team/ufme-ray:1.2", "reg:5000/team/ufme-ray"), ("r/ufme-ray@sha256:ab", "r/ufme-ray")],
)
def test_image_repository(image, repository):
    assert render.image_repository(image) == repository


# --- the Ray cluster -----------------------------------------------------------------------------


def test_worker_groups_sit_where_the_overlay_patches_expect(layout):
    base = render.kustomize(layout.kuberay_dir / "base")
    names = [g["groupName"] for g in one(base, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert names == ["stages", "shard", "compaction"]


@pytest.mark.parametrize("env", ENVS)
def test_head_takes_no_work_and_gcs_survives_a_head_restart(rendered, env):
    cluster = one(rendered[env], "RayService")["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["enableInTreeAutoscaling"] is True
    gcs = cluster["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] and gcs["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "ufme-redis", "key": "redis-password"}
    assert cluster["authOptions"] == {"mode": "token", "secretName": "ufme-ray-auth"}


def _custom_resources(ray_start_params):
    """Parse rayStartParams.resources the way the Ray autoscaler does ('"{\\"k\\": 1}"')."""
    raw = ray_start_params.get("resources")
    return {} if raw is None else json.loads(raw[1:-1].replace("\\", ""))


@pytest.mark.parametrize("env", ENVS)
def test_shard_actors_can_only_land_on_shard_pods_one_per_pod(rendered, env):
    rayservice = one(rendered[env], "RayService")
    args = app_args(rayservice["spec"]["serveConfigV2"])
    by_name = groups(rayservice)
    shard = by_name["shard"]
    assert _custom_resources(shard["rayStartParams"]) == {"ufme_shard": 1}
    for name, group in by_name.items():  # no other group offers the shard resource
        if name != "shard":
            assert "ufme_shard" not in _custom_resources(group["rayStartParams"])
    assert args.shard_resources == {"ufme_shard": 1.0}  # one shard actor uses the whole pod's shard slot
    assert float(shard["rayStartParams"]["num-cpus"]) == args.shard_num_cpus == 0  # and no Serve replica fits there
    assert shard["minReplicas"] == shard["maxReplicas"] == shard["replicas"] == SHARDS[env]


def test_production_shards_use_dedicated_nodes_and_staging_does_not(rendered):
    production = groups(one(rendered["production"], "RayService"))["shard"]["template"]["spec"]
    assert production["nodeSelector"] == {"role": "shard"}
    assert {"key": "dedicated", "operator": "Equal", "value": "faiss-shard", "effect": "NoSchedule"} in production["tolerations"]
    staging = groups(one(rendered["staging"], "RayService"))["shard"]["template"]["spec"]
    assert "nodeSelector" not in staging


def _resources(group):
    return group["template"]["spec"]["containers"][0]["resources"]


def test_production_sizes_are_the_original_deployments(rendered):
    by_name = groups(one(rendered["production"], "RayService"))
    assert _resources(by_name["stages"]) == {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    assert _resources(by_name["shard"]) == {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"cpu": "2", "memory": "6Gi"}}
    assert _resources(by_name["compaction"]) == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
    assert (by_name["stages"]["minReplicas"], by_name["stages"]["maxReplicas"]) == (2, 8)
    assert (by_name["compaction"]["minReplicas"], by_name["compaction"]["maxReplicas"]) == (0, 1)


def test_staging_is_smaller(rendered):
    staging, production = groups(one(rendered["staging"], "RayService")), groups(one(rendered["production"], "RayService"))
    for name in ("stages", "shard", "compaction"):
        assert _resources(staging[name]) != _resources(production[name])
    assert staging["stages"]["maxReplicas"] < production["stages"]["maxReplicas"]


def test_storage_per_environment(rendered):
    staging, production = config_env(rendered["staging"]), config_env(rendered["production"])
    assert staging["UFME_STORAGE_URI"] == "file:///var/lib/ufme-ray/store"
    assert production["UFME_STORAGE_URI"].startswith("s3://")
    for uri in (staging["UFME_STORAGE_URI"], production["UFME_STORAGE_URI"]):
        UfmeSettings(storage_uri=uri)  # the settings model accepts it
    pvc = one(rendered["staging"], "PersistentVolumeClaim", "ufme-store")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    mounted = {
        where: any(m["name"] == "store" for m in template["spec"]["containers"][0]["volumeMounts"])
        for where, template in [("head", one(rendered["staging"], "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"])]
        + [(n, g["template"]) for n, g in groups(one(rendered["staging"], "RayService")).items()]
    }
    assert all(mounted.values()), mounted
    assert not [m for m in rendered["production"] if m["kind"] == "PersistentVolumeClaim"]


def test_models_come_from_the_mirror_with_checksums_not_the_image(rendered):
    stages = groups(one(rendered["production"], "RayService"))["stages"]["template"]["spec"]
    (init,) = stages["initContainers"]
    assert "ufme-ray models pull" in " ".join(init["command"]) and "$UFME_MODEL_MIRROR" in " ".join(init["command"])
    mounts = {m["name"]: m for m in stages["containers"][0]["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and mounts["models"]["readOnly"] is True
    assert config_env(rendered["production"])["UFME_MODEL_DIR"] == "/models"
    assert {"name": "models", "emptyDir": {"sizeLimit": "2Gi"}} in stages["volumes"]


# --- compaction, budgets, security -----------------------------------------------------------------


@pytest.mark.parametrize("env", ENVS)
def test_compaction_cronjob_is_hourly_without_overlap(rendered, env):
    cronjob = one(rendered[env], "CronJob", "ufme-compaction")
    assert cronjob["spec"]["schedule"] == "0 * * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert (job["activeDeadlineSeconds"], job["backoffLimit"]) == (3600, 2)
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "ufme-compaction"
    command = pod["containers"][0]["command"]
    assert command[:3] == ["ufme-ray", "k8s", "compact"]
    assert "--address=http://ufme-head-svc.ufme.svc:8265" in command
    token = {e["name"]: e for e in pod["containers"][0]["env"]}["RAY_AUTH_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "ufme-ray-auth", "key": "auth_token"}


def test_compaction_rbac_is_one_read(rendered):
    role = one(rendered["production"], "Role", "ufme-compaction")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayservices"], "resourceNames": ["ufme"], "verbs": ["get"]}]
    binding = one(rendered["production"], "RoleBinding", "ufme-compaction")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ufme-compaction", "namespace": "ufme"}]
    for account in ("ufme-ray", "ufme-compaction"):
        assert one(rendered["production"], "ServiceAccount", account)["automountServiceAccountToken"] is False


def test_disruption_budgets(rendered):
    stages = one(rendered["production"], "PodDisruptionBudget", "ufme-stages")["spec"]
    assert stages["minAvailable"] == 1 and stages["selector"]["matchLabels"]["app.kubernetes.io/component"] == "stages"
    assert one(rendered["staging"], "PodDisruptionBudget", "ufme-shard")["spec"]["minAvailable"] == 1
    assert one(rendered["production"], "PodDisruptionBudget", "ufme-shard")["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "ufme-ray", "app.kubernetes.io/component": "shard"}}
    }


def _all_containers(manifests):
    from tests.unit.k8s.schema_check import pod_templates

    for manifest in manifests:
        for where, template in pod_templates(manifest):
            for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
                yield f"{manifest['kind']}/{where}/{container['name']}", template["spec"], container


@pytest.mark.parametrize("env", ENVS)
def test_every_container_is_non_root_read_only_without_escalation(rendered, env):
    seen = 0
    for where, pod, container in _all_containers(rendered[env]):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"] == {"drop": ["ALL"]}, where
        assert container["resources"]["requests"] and container["resources"]["limits"], where
        seen += 1
    assert seen == 6
    autoscaler = one(rendered[env], "RayService")["spec"]["rayClusterConfig"]["autoscalerOptions"]["securityContext"]
    assert autoscaler["readOnlyRootFilesystem"] is True and autoscaler["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("env", ENVS)
def test_ray_containers_have_all_three_probes(rendered, env):
    for where, _, container in _all_containers(rendered[env]):
        if container["name"].startswith("ray-"):
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container), where


@pytest.mark.parametrize("env", ENVS)
def test_no_secret_values_only_references(rendered, env):
    assert not [m for m in rendered[env] if m["kind"] == "Secret"]
    references = set()
    for _, _, container in _all_containers(rendered[env]):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                references.add(source["secretRef"]["name"])
        for variable in container.get("env", []):
            assert "value" not in variable or not any(w in variable["name"].upper() for w in ("TOKEN", "PASSWORD", "SECRET", "KEY")), variable
            if "secretKeyRef" in variable.get("valueFrom", {}):
                references.add(variable["valueFrom"]["secretKeyRef"]["name"])
    assert references == {"ufme-s3-credentials", "ufme-ray-auth", "ufme-encryption", "ufme-audit-subject-key"}
    for key in config_env(rendered[env]):
        assert not any(w in key for w in ("SECRET", "PASSWORD", "TOKEN", "ACCESS_KEY")), key


def test_templates_encrypted_at_rest_in_production_only(rendered):
    """Production names the key in force (the keys come from a Secret); staging leaves it off."""
    assert config_env(rendered["production"]).get("UFME_ENCRYPTION__KEY_ID") == "k1"
    assert "UFME_ENCRYPTION__KEY_ID" not in config_env(rendered["staging"])


def test_network_policy_ingress_sources(rendered):
    policy = one(rendered["production"], "NetworkPolicy", "ufme-ray")["spec"]
    sources = {
        tuple(sorted((peer.get("namespaceSelector") or {}).get("matchLabels", {}).values())): [p["port"] for p in rule.get("ports", [])]
        for rule in policy["ingress"] for peer in rule["from"] if "namespaceSelector" in peer
    }
    assert sources == {("ingress-nginx",): [8000], ("monitoring",): [8080], ("kuberay-system",): [8265, 8000, 52365]}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert {53, 6379, 443} <= egress_ports


def test_grafana_dashboard_queries_application_and_serve_metrics(rendered):
    config_map = one(rendered["production"], "ConfigMap", "ufme-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["ufme-ray.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("ray_ufme_request_latency_ms_bucket" in e for e in exprs)
    assert any("ray_ufme_shard_ready" in e for e in exprs)
    assert any("ray_serve_deployment_processing_latency_ms_bucket" in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _bytes(quantity: str) -> int:
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


@pytest.mark.parametrize("env", ENVS)
def test_object_stores_fit_their_shared_memory_and_pod(rendered, env):
    cluster = one(rendered[env], "RayService")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        object_store = int(group["rayStartParams"]["object-store-memory"])
        (shm,) = [v for v in spec["volumes"] if v["name"] == "dshm"]
        memory_limit = _bytes(spec["containers"][0]["resources"]["limits"]["memory"])
        assert object_store <= _bytes(shm["emptyDir"]["sizeLimit"]), group.get("groupName", "head")
        assert object_store <= 0.3 * memory_limit, group.get("groupName", "head")
