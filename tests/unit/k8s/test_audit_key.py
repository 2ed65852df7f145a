"""The audit subject key on Kubernetes: every Ray container of both overlays (and of the base and
the GPU component) reads UFME_AUDIT__SUBJECT_KEY from the Secret ufme-audit-subject-key, nothing
there allows plain subject ids, and the settings such a container loads give the Gateway keyed
pseudonyms — or, without the Secret, a ConfigError instead of raw ids in the trail.

Ray containers, not only the stages group: the Serve app's settings (the key included) are read by
`build_app` wherever Serve runs it, then handed to the Gateway replicas. The compaction CronJob
only submits a Ray job and builds no Gateway, so it needs no key."""

from __future__ import annotations

import base64
import os

import pytest
import yaml

from tests.unit.k8s.conftest import REPO_ROOT
from tests.unit.k8s.schema_check import pod_templates
from ufme_ray.audit import SubjectPseudonyms
from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.k8s import render
from ufme_ray.serve_config import app_args

ENVS = ("staging", "production")
SECRET, SECRET_KEY, VARIABLE = "ufme-audit-subject-key", "subject_key", "UFME_AUDIT__SUBJECT_KEY"
PLAIN = "UFME_AUDIT__ALLOW_PLAIN_SUBJECT_IDS"


def ray_containers(manifests) -> list[tuple[str, dict]]:
    """(where, container) of every Ray container of the RayService: head and every worker group."""
    (rayservice,) = [m for m in manifests if m["kind"] == "RayService"]
    found = [
        (f"{where}/{container['name']}", container)
        for where, template in pod_templates(rayservice)
        for container in template["spec"]["containers"]
        if container["name"].startswith("ray-")
    ]
    assert found
    return found


def assert_key_from_the_secret(manifests) -> None:
    containers = ray_containers(manifests)
    assert {where.split("/")[0] for where, _ in containers} >= {"head", "stages", "shard", "compaction"}
    for where, container in containers:
        variables = [v for v in container.get("env", []) if v["name"] == VARIABLE]
        assert len(variables) == 1, f"{where}: {VARIABLE} is not set (exactly once)"
        (variable,) = variables
        assert "value" not in variable, where
        reference = variable["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == (SECRET, SECRET_KEY), where
        assert not [v for v in container.get("env", []) if v["name"].startswith("UFME_AUDIT__") and v["name"] != VARIABLE], where


def assert_plain_ids_not_allowed(manifests) -> None:
    for manifest in manifests:
        if manifest["kind"] == "ConfigMap":
            assert not [k for k in manifest.get("data", {}) if k.startswith("UFME_AUDIT__")], manifest["metadata"]["name"]
        for where, template in pod_templates(manifest):
            for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
                assert PLAIN not in {v["name"] for v in container.get("env", [])}, where
    (rayservice,) = [m for m in manifests if m["kind"] == "RayService"]
    settings = app_args(yaml.safe_load(rayservice["spec"]["serveConfigV2"])).settings
    assert "allow_plain_subject_ids" not in settings.get("audit", {})


@pytest.mark.parametrize("env", ENVS)
def test_every_ray_container_gets_the_audit_key_from_the_secret(rendered, env):
    assert_key_from_the_secret(rendered[env])


@pytest.mark.parametrize("env", ENVS)
def test_no_overlay_allows_plain_subject_ids(rendered, env):
    assert_plain_ids_not_allowed(rendered[env])


def test_the_base_does_not_run_plain_either(layout):
    base = render.kustomize(layout.kuberay_dir / "base")
    assert_key_from_the_secret(base)
    assert_plain_ids_not_allowed(base)


def test_the_gpu_worker_group_gets_the_key_too(tmp_path):
    from tests.unit.k8s.test_gpu_component import with_gpu_component

    manifests = render.render("production", layout=with_gpu_component(tmp_path))
    assert "gpu/ray-worker" in dict(ray_containers(manifests))
    assert_key_from_the_secret(manifests)


# --- what such a container's settings give the Gateway --------------------------------------------


def container_environment(manifests, container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    """The environment Kubernetes gives `container`, with `secrets` (name -> data) existing."""
    config_maps = {m["metadata"]["name"]: m.get("data", {}) for m in manifests if m["kind"] == "ConfigMap"}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            environment.update(config_maps[source["configMapRef"]["name"]])
        elif source["secretRef"]["name"] in secrets:
            environment.update(secrets[source["secretRef"]["name"]])
        else:
            assert source["secretRef"].get("optional"), source
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        if reference["key"] in secrets.get(reference["name"], {}):
            environment[variable["name"]] = secrets[reference["name"]][reference["key"]]
        else:
            assert reference.get("optional"), variable
    return environment


def gateway_pseudonyms(manifests, container: dict, secrets, monkeypatch) -> SubjectPseudonyms:
    """What the Gateway's constructor builds from the settings `build_app` loads in `container`."""
    for name in [n for n in os.environ if n.startswith("UFME_")]:
        monkeypatch.delenv(name)
    for name, value in container_environment(manifests, container, secrets).items():
        monkeypatch.setenv(name, value)
    (rayservice,) = [m for m in manifests if m["kind"] == "RayService"]
    settings = UfmeSettings.load(**app_args(yaml.safe_load(rayservice["spec"]["serveConfigV2"])).settings)
    transported = UfmeSettings.model_validate_json(settings.transport_json())  # as the replica gets it
    return SubjectPseudonyms.from_settings(transported.audit)


@pytest.mark.parametrize("env", ENVS)
def test_with_the_secret_audit_records_hold_pseudonyms(rendered, env, monkeypatch):
    key = base64.b64encode(os.urandom(32)).decode()
    secrets = {
        SECRET: {SECRET_KEY: key},
        "ufme-encryption": {"UFME_ENCRYPTION__KEYS": '{"k1": "%s"}' % base64.b64encode(os.urandom(32)).decode()},
    }
    for where, container in ray_containers(rendered[env]):
        pseudonym = gateway_pseudonyms(rendered[env], container, secrets, monkeypatch)("alice")
        assert pseudonym.startswith("hmac:") and "alice" not in pseudonym, where


@pytest.mark.parametrize("env", ENVS)
def test_without_the_secret_the_gateway_refuses_to_start(rendered, env, monkeypatch):
    secrets = {"ufme-encryption": {"UFME_ENCRYPTION__KEYS": '{"k1": "%s"}' % base64.b64encode(os.urandom(32)).decode()}}
    (where, container), *_ = [(w, c) for w, c in ray_containers(rendered[env]) if w.startswith("stages/")]
    with pytest.raises(ConfigError, match="allow_plain_subject_ids") as refused:
        gateway_pseudonyms(rendered[env], container, secrets, monkeypatch)
    assert "audit.subject_key" in str(refused.value), where


def test_the_documented_secret_command_names_this_secret_and_key():
    """The overlays say how to create the Secret the manifests reference."""
    for env in ENVS:
        text = (REPO_ROOT / "kuberay" / "overlays" / env / "kustomization.yaml").read_text()
        assert f"create secret generic {SECRET}" in text and f"--from-literal={SECRET_KEY}=" in text, env
