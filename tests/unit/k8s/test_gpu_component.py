"""kuberay/components/gpu in an overlay: a GPU worker group, and a serveConfigV2 whose model stages
reserve fractions of a GPU and ask for CUDA. Rendered from a copy of the tree whose production
overlay lists the component, as an operator would (then `ufme-ray k8s sync`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.unit.k8s import schema_check
from tests.unit.k8s.conftest import CRD_DIR, REPO_ROOT
from ufme_ray.config import UfmeSettings
from ufme_ray.k8s import render
from ufme_ray.k8s.errors import RenderError
from ufme_ray.serve_config import STAGE_DEPLOYMENTS, app_args, gpu_placement_problems

GPU_COMPONENT = "../../components/gpu"


def with_gpu_component(root: Path, *, sync: bool = True) -> render.Layout:
    """A copy of serve_config.yaml and kuberay/ under `root`, production listing the GPU component."""
    shutil.copytree(REPO_ROOT / "kuberay", root / "kuberay")
    shutil.copyfile(REPO_ROOT / "serve_config.yaml", root / "serve_config.yaml")
    kustomization = root / "kuberay" / "overlays" / "production" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + f"components:\n  - {GPU_COMPONENT}\n")
    layout = render.Layout(root / "serve_config.yaml", root / "kuberay")
    if sync:
        assert render.sync(layout) == [layout.generated_path("production")]  # only the overlay that lists it
    return layout


@pytest.fixture(scope="module")
def gpu_rendered(tmp_path_factory) -> list[dict]:
    return render.render("production", layout=with_gpu_component(tmp_path_factory.mktemp("gpu")))


def rayservice(manifests):
    return render.find(manifests, "RayService", render.RAYSERVICE_NAME)


def serve_app(manifests) -> dict:
    config = yaml.safe_load(rayservice(manifests)["spec"]["serveConfigV2"])
    (app,) = [a for a in config["applications"] if a["name"] == "ufme"]
    return app


def test_a_gpu_worker_group_after_the_base_groups(gpu_rendered, rendered):
    groups = rayservice(gpu_rendered)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["stages", "shard", "compaction", "gpu"]
    assert groups[:3] == rayservice(rendered["production"])["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = groups[3]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    # the overlay's image and generated ConfigMap name reach the component's pods too
    assert {c["image"] for c in [container, *pod["initContainers"]]} == {"registry.invalid/ufme-ray:0.1.0"}
    assert container["envFrom"][0]["configMapRef"]["name"].startswith("ufme-config-")
    (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert int(groups[3]["rayStartParams"]["object-store-memory"]) <= 2 * 2**30 and shm["emptyDir"]["sizeLimit"] == "4Gi"


def test_the_model_stages_share_a_gpu_and_ask_for_cuda(gpu_rendered, monkeypatch):
    monkeypatch.delenv("UFME_GALLERY__NUM_SHARDS", raising=False)
    config = yaml.safe_load(rayservice(gpu_rendered)["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    settings = UfmeSettings.load(**app_args(config).settings)
    assert settings.runtime.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert settings.gallery.num_shards == 5  # the overlay's own overrides still apply
    gpus = {d["name"]: d["ray_actor_options"].get("num_gpus", 0) for d in serve_app(gpu_rendered)["deployments"]}
    assert all(0 < gpus[name] < 1 for name in STAGE_DEPLOYMENTS)
    assert sum(gpus[name] for name in STAGE_DEPLOYMENTS) <= 1  # one replica of each fits one GPU
    assert gpus["Gateway"] == gpus["Searcher"] == 0
    assert gpu_placement_problems(config) == []


def test_nothing_else_of_the_serve_config_changes(gpu_rendered, rendered):
    gpu, cpu = serve_app(gpu_rendered), serve_app(rendered["production"])
    del gpu["args"]["settings"]["runtime"]["providers"]
    assert gpu["args"]["settings"].pop("detection") == {"input_size": "model"}  # one input shape for CUDA
    for deployment in gpu["deployments"]:
        deployment["ray_actor_options"].pop("num_gpus", None)
    assert gpu == cpu


def test_the_rayservice_matches_the_kuberay_crd(gpu_rendered):
    defaulted = schema_check.validate_crd_object(CRD_DIR, rayservice(gpu_rendered))
    assert schema_check.rayservice_problems(defaulted) == []
    template = defaulted["spec"]["rayClusterConfig"]["workerGroupSpecs"][3]["template"]
    schema_check.validate_core(schema_check.as_pod_template("rayservice-gpu", template))


def test_render_refuses_gpu_stages_that_ask_for_cpu_only(tmp_path):
    layout = with_gpu_component(tmp_path)
    overrides = layout.kuberay_dir / "components" / "gpu" / render.OVERRIDES_NAME
    overrides.write_text(overrides.read_text().replace("providers: [CUDAExecutionProvider, CPUExecutionProvider]", "{}"))
    render.sync(layout)
    with pytest.raises(RenderError, match="Detector reserves 0.2 GPU but its providers"):
        render.render("production", layout=layout)


def test_render_refuses_a_component_added_without_sync(tmp_path):
    layout = with_gpu_component(tmp_path, sync=False)
    with pytest.raises(RenderError, match="ufme-ray k8s sync"):
        render.render("production", layout=layout)
