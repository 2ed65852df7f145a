"""Reading the ufme application's args from a Serve config (serve_config.yaml, serveConfigV2)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from ufme_ray.config import ConfigError
from ufme_ray.serve_config import AppArgs, app_args, gpu_placement_problems


def test_the_repo_serve_config():
    args = app_args((REPO_ROOT / "serve_config.yaml").read_text())
    assert args.num_shards == 2 and args.shard_num_cpus == 0.1


def test_num_shards_defaults_to_the_settings_default():
    assert app_args({"applications": [{"name": "ufme", "import_path": "x:y"}]}).num_shards == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("applications: [", "not YAML"),
        ("applications: [{name: other}]", "no application 'ufme'"),
        ("applications: [{name: ufme, args: {shard_cpus: 1}}]", "shard_cpus"),
        ("applications: [{name: ufme, args: {settings: {gallery: {num_shards: 0}}}}]", "num_shards"),
        ("applications: 7", "invalid"),
    ],
)
def test_bad_configs_name_the_problem(config, message):
    with pytest.raises(ConfigError, match=message):
        app_args(config).num_shards


def test_the_kubernetes_and_cluster_code_read_it_without_importing_ray():
    probe = "import sys, ufme_ray.serve_config, ufme_ray.k8s.client, ufme_ray.cluster; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


def gpu_config(runtime: dict, **num_gpus: float) -> dict:
    deployments = [{"name": name, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}} for name, gpus in num_gpus.items()]
    return {"applications": [{"name": "ufme", "args": {"settings": {"runtime": runtime}}, "deployments": deployments}]}


def test_the_repo_serve_config_places_no_stage_on_a_gpu():
    assert gpu_placement_problems((REPO_ROOT / "serve_config.yaml").read_text()) == []


@pytest.mark.parametrize(
    ("runtime", "num_gpus", "problems"),
    [
        ({"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}, {"Detector": 0.2, "Searcher": 0}, []),
        ({"providers": ["CUDAExecutionProvider"], "stage_providers": {"detector": ["CPUExecutionProvider"]}},
         {"Detector": 0, "Embedder": 0.2, "Gateway": 0}, []),
        ({"providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]}, {"Embedder": 0},
         ["Embedder asks for ['TensorrtExecutionProvider', 'CPUExecutionProvider'] but reserves no GPU"]),
        ({"stage_providers": {"quality": ["OpenVINOExecutionProvider"]}}, {"Quality": 0.1},
         ["Quality reserves 0.1 GPU but its providers ['OpenVINOExecutionProvider'] run on none"]),
    ],
)
def test_gpu_reservations_and_providers_must_agree(runtime, num_gpus, problems):
    found = gpu_placement_problems(gpu_config(runtime, **num_gpus))
    assert [p.split(" (")[0] for p in found] == problems


def test_gpu_placement_refuses_invalid_runtime_settings():
    with pytest.raises(ConfigError, match="unknown execution provider CUDA"):
        gpu_placement_problems(gpu_config({"providers": ["CUDA"]}, Detector=0.2))


def test_the_app_resolves_file_then_environment_then_args(tmp_path, monkeypatch):
    """What build_app gives every deployment: defaults < UFME_CONFIG < UFME_* < args.settings."""
    for key in [k for k in os.environ if k.startswith("UFME_")]:
        monkeypatch.delenv(key)
    settings_file = tmp_path / "ufme.yaml"
    settings_file.write_text(
        "duplicates: {action: warn}\nthresholds: {detection_min: 0.7, quality_min: 0.2}\ngallery: {num_shards: 4}\n"
    )
    monkeypatch.setenv("UFME_CONFIG", str(settings_file))
    monkeypatch.setenv("UFME_THRESHOLDS__QUALITY_MIN", "0.25")
    args = AppArgs.model_validate({"settings": {"gallery": {"num_shards": 3}}})
    settings = args.resolve_settings()
    assert settings.duplicates.action == "warn" and settings.thresholds.detection_min == 0.7  # the file
    assert settings.thresholds.quality_min == 0.25  # UFME_* over the file
    assert settings.gallery.num_shards == 3  # args.settings over both
