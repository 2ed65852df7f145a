"""What each stage replica reports about its model sessions, without a cluster: the deployments'
classes run in-process on the real models (Ray's metric objects need no cluster)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ufme_ray.config import UfmeSettings
from ufme_ray.serving import stages

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def settings_json(model_dir: Path, tmp_path_factory) -> str:
    settings = UfmeSettings.load(
        model_dir=model_dir, data_dir=tmp_path_factory.mktemp("data"),
        runtime={"providers": [CUDA, CPU], "stage_providers": {"detector": [CPU]}},
    )
    return settings.transport_json()


@pytest.mark.parametrize(
    ("deployment", "models"),
    [
        (stages.Detector, {"yunet_2023mar": [CPU]}),
        (stages.Quality, {"lightqnet_dm100": [CPU]}),
        (stages.Liveness, {"minifasnet_v2": [CPU], "minifasnet_v1se": [CPU]}),
        (stages.Morph, {}),  # not configured by default: no session
        (stages.Embedder, {"mobilefacenet_foamliu": [CPU]}),
    ],
)
def test_each_stage_reports_the_providers_its_sessions_got(deployment, models, settings_json):
    replica = deployment.func_or_class(settings_json)
    status = asyncio.run(replica.status())
    assert status == {"stage": replica.stage, "models": models}
    assert replica.stage == deployment.name.lower()


def test_a_replica_logs_one_line_per_model_to_the_serve_log(settings_json, caplog):
    caplog.set_level(logging.INFO, logger=stages.logger.name)
    stages.Liveness.func_or_class(settings_json)
    lines = [r.getMessage() for r in caplog.records if r.name == stages.logger.name]
    assert lines == [f"stage liveness: model {name} runs on ['{CPU}']" for name in ("minifasnet_v2", "minifasnet_v1se")]
