from __future__ import annotations

from pathlib import Path

import pytest

from ufme_ray.config import ConfigError, UfmeSettings


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("UFME_")]:
        monkeypatch.delenv(key)


def test_defaults_are_the_permissive_model_set():
    settings = UfmeSettings.load()
    assert settings.models.detector == "yunet_2023mar"
    assert settings.models.embedder == "mobilefacenet_foamliu"
    assert settings.models.liveness == ["minifasnet_v2", "minifasnet_v1se"]
    assert settings.models.quality == "lightqnet_dm100"
    assert settings.models.morph is None
    assert settings.resolved_storage_uri.startswith("file://")


def test_yaml_then_environment_then_overrides(tmp_path: Path, monkeypatch):
    config = tmp_path / "ufme.yaml"
    config.write_text("thresholds: {similarity_min: 0.3, quality_min: 0.2}\ngallery: {num_shards: 5}\n")
    assert UfmeSettings.load(config).thresholds.similarity_min == 0.3
    monkeypatch.setenv("UFME_THRESHOLDS__SIMILARITY_MIN", "0.5")
    monkeypatch.setenv("UFME_MODEL_DIR", str(tmp_path))
    settings = UfmeSettings.load(config)
    assert settings.thresholds.similarity_min == 0.5  # environment beats the file
    assert settings.thresholds.quality_min == 0.2  # the file's other keys survive
    assert settings.gallery.num_shards == 5 and settings.model_dir == tmp_path
    assert UfmeSettings.load(config, gallery={"num_shards": 3}).gallery.num_shards == 3


@pytest.mark.parametrize(
    "text, field",
    [
        ("thresholds: {similarity_min: 3}", "thresholds.similarity_min"),
        ("gallery: {num_shard: 5}", "gallery.num_shard"),
        ("gallery: {num_shards: 0}", "gallery.num_shards"),
        ("image: {max_bytes: lots}", "image.max_bytes"),
        ("storage_uri: ftp://x", "storage_uri"),
        ("models: {liveness: [minifasnet_v2, minifasnet_v2]}", "names a model twice"),
    ],
)
def test_invalid_values_fail_with_the_field_named(tmp_path: Path, text: str, field: str):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        UfmeSettings.load(config)
    assert field in str(excinfo.value)


def test_environment_typo_fails(monkeypatch):
    monkeypatch.setenv("UFME_THRESHOLDS__SIMILARITY_MINIMUM", "0.5")
    with pytest.raises(ConfigError, match="similarity_minimum"):
        UfmeSettings.load()


def test_file_must_be_a_mapping(tmp_path: Path):
    config = tmp_path / "list.yaml"
    config.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        UfmeSettings.load(config)
