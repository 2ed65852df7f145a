"""Execution providers: the settings' shape and validation, the choice among what onnxruntime has,
the fallback to CPU with one warning naming the model, and what each model reports it got.
This onnxruntime is the CPU wheel, so every GPU provider asked for here falls back."""

from __future__ import annotations

import logging

import onnxruntime as ort
import pytest

from ufme_ray import execution_providers
from ufme_ray.config import ConfigError, UfmeSettings
from ufme_ray.models.manifest import packaged_manifest
from ufme_ray.vision import onnx_model
from ufme_ray.vision.onnx_model import load_session
from ufme_ray.vision.pipeline import Pipeline

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
YUNET = packaged_manifest().get("yunet_2023mar")
LIGHTQNET = packaged_manifest().get("lightqnet_dm100")


def runtime(**values):
    return UfmeSettings.load(runtime=values).runtime


# --- settings ---------------------------------------------------------------------------------------


def test_cpu_by_default_and_per_stage_lists_replace_the_global_one():
    assert runtime().providers_for("embedder") == [CPU]
    settings = runtime(providers=[TRT, CUDA, CPU], stage_providers={"detector": [CPU]})
    assert settings.providers_for("detector") == [CPU]
    assert settings.providers_for("quality") == settings.providers_for("embedder") == [TRT, CUDA, CPU]


def test_onnxruntime_pairs_carry_provider_options_through_yaml_env_and_transport(tmp_path, monkeypatch):
    config = tmp_path / "settings.yaml"
    config.write_text(
        "runtime:\n  providers:\n    - [TensorrtExecutionProvider, {trt_fp16_enable: true, trt_engine_cache_path: /cache}]\n"
        "    - [CUDAExecutionProvider, {device_id: 1}]\n    - CPUExecutionProvider\n"
    )
    settings = UfmeSettings.load(config)
    assert settings.runtime.providers == [
        (TRT, {"trt_fp16_enable": True, "trt_engine_cache_path": "/cache"}), (CUDA, {"device_id": 1}), CPU
    ]
    assert UfmeSettings.model_validate_json(settings.transport_json()).runtime == settings.runtime  # to replicas
    monkeypatch.setenv("UFME_RUNTIME__PROVIDERS", '[["CUDAExecutionProvider", {"device_id": 0}], "CPUExecutionProvider"]')
    assert UfmeSettings.load().runtime.providers == [(CUDA, {"device_id": 0}), CPU]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"providers": ["CUDA", CPU]}, r"runtime\.providers: .*unknown execution provider CUDA; known: Tensorrt"),
        ({"providers": [[CUDA, {"device_id": 0}], "cuda"]}, "unknown execution provider cuda"),
        ({"stage_providers": {"embedder": ["GPU"]}}, r"runtime\.stage_providers\.embedder: .*unknown execution provider GPU"),
        ({"stage_providers": {"embeder": [CPU]}}, r"runtime\.stage_providers\.embeder.*'detector', 'quality'"),
        ({"providers": [CPU, CUDA]}, "would never run; put it last"),
        ({"providers": [CUDA, CUDA]}, "once"),
        ({"providers": []}, "once"),
    ],
)
def test_bad_provider_settings_fail_at_start_naming_the_problem(values, message):
    with pytest.raises(ConfigError, match=message):
        runtime(**values)


def test_the_known_names_are_onnxruntimes():
    assert set(execution_providers.KNOWN) <= set(ort.get_all_providers())


# --- choice and fallback ----------------------------------------------------------------------------


def test_choose_keeps_the_asked_order_drops_the_missing_and_ends_with_cpu():
    choose = execution_providers.choose
    assert choose([TRT, CUDA, CPU], [CUDA, CPU]) == [CUDA, CPU]
    assert choose([(CUDA, {"device_id": 1})], [TRT, CUDA, CPU]) == [(CUDA, {"device_id": 1}), CPU]
    assert choose([TRT, CUDA], [CPU]) == [CPU]
    assert choose([(CPU, {"arena_extend_strategy": "kSameAsRequested"})], [CPU]) == [
        (CPU, {"arena_extend_strategy": "kSameAsRequested"})
    ]


def model_lines(caplog, level):
    return [r.getMessage() for r in caplog.records if r.name == onnx_model.__name__ and r.levelno == level]


def test_gpu_providers_missing_fall_back_to_cpu_with_one_warning_naming_the_model(settings, caplog):
    caplog.set_level(logging.INFO, logger=onnx_model.__name__)
    session = load_session(settings.model_dir, YUNET, runtime(providers=[TRT, [CUDA, {"device_id": 0}], CPU]))
    assert session.get_providers() == [CPU]
    (warning,) = model_lines(caplog, logging.WARNING)
    assert warning.startswith("model yunet_2023mar: execution providers ['TensorrtExecutionProvider', 'CUDAExecutionProvider']")
    assert warning.endswith("falling back to ['CPUExecutionProvider']")
    assert model_lines(caplog, logging.INFO) == [
        f"model yunet_2023mar: providers ['{CPU}'] (asked ['{TRT}', '{CUDA}', '{CPU}'])"
    ]


def test_a_provider_onnxruntime_cannot_start_is_reported_from_what_the_session_got(settings, caplog, monkeypatch):
    """onnxruntime-gpu lists CUDA even where no GPU is visible, then starts the session on CPU."""
    monkeypatch.setattr(onnx_model.ort, "get_available_providers", lambda: [CUDA, CPU])
    caplog.set_level(logging.INFO, logger=onnx_model.__name__)
    with pytest.warns(UserWarning, match="not in available provider names"):  # onnxruntime's own, on this CPU wheel
        session = load_session(settings.model_dir, YUNET, runtime(providers=[CUDA, CPU]))
    assert session.get_providers() == [CPU]
    assert model_lines(caplog, logging.WARNING) == [
        f"model yunet_2023mar: providers ['{CPU}'] (asked ['{CUDA}', '{CPU}']; onnxruntime could not start ['{CUDA}'])"
    ]


def test_the_per_stage_list_decides_for_that_stages_models(settings, caplog):
    caplog.set_level(logging.INFO, logger=onnx_model.__name__)
    chosen = runtime(providers=[CUDA, CPU], stage_providers={"detector": [CPU]})
    load_session(settings.model_dir, YUNET, chosen)
    assert model_lines(caplog, logging.WARNING) == []
    assert model_lines(caplog, logging.INFO) == [f"model yunet_2023mar: providers ['{CPU}'] (asked ['{CPU}'])"]
    caplog.clear()
    load_session(settings.model_dir, LIGHTQNET, chosen)
    (warning,) = model_lines(caplog, logging.WARNING)
    assert warning.startswith(f"model lightqnet_dm100: execution providers ['{CUDA}'] are not available")


# --- what is reported -------------------------------------------------------------------------------


def test_the_pipeline_reports_each_sessions_providers_per_stage(settings):
    pipeline = Pipeline.from_settings(settings.model_copy(update={"runtime": runtime(providers=[CUDA, CPU])}))
    assert pipeline.providers == {
        "detector": {"yunet_2023mar": [CPU]},
        "quality": {"lightqnet_dm100": [CPU]},
        "liveness": {"minifasnet_v2": [CPU], "minifasnet_v1se": [CPU]},
        "embedder": {"mobilefacenet_foamliu": [CPU]},
    }  # morph is not configured by default
