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


# --- one precedence order (docs/SETTINGS.md): defaults < file < UFME_* < overrides < user_config ------


def test_ufme_config_is_the_settings_file_and_the_flag_wins(tmp_path: Path, monkeypatch):
    """UFME_CONFIG is read by every process that loads settings (not only the compaction job);
    --config (the explicit path) names the same thing and wins over it; UFME_* beat both."""
    by_env, by_flag = tmp_path / "env.yaml", tmp_path / "flag.yaml"
    by_env.write_text("duplicates: {action: warn}\nmodels: {liveness: []}\n")
    by_flag.write_text("duplicates: {action: allow}\n")
    monkeypatch.setenv("UFME_CONFIG", str(by_env))
    settings = UfmeSettings.load()
    assert settings.duplicates.action == "warn" and settings.models.liveness == []
    assert UfmeSettings.load(by_flag).duplicates.action == "allow"
    assert UfmeSettings.load(by_flag).models.liveness == ["minifasnet_v2", "minifasnet_v1se"]  # not both files
    monkeypatch.setenv("UFME_DUPLICATES__ACTION", "reject")
    assert UfmeSettings.load().duplicates.action == "reject"
    monkeypatch.setenv("UFME_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml"):
        UfmeSettings.load()


def test_a_partial_user_config_changes_only_what_it_names():
    from ufme_ray.config import LiveConfig

    settings = UfmeSettings.load(
        duplicates={"action": "warn", "threshold": 0.6},
        thresholds={"detection_min": 0.7, "similarity_min": 0.3},
        gates={"enrol": ["quality"]},
    )
    base = settings.live_config()
    assert base.overlay({}) == base and base.overlay(None) == base
    live = base.overlay({"thresholds": {"similarity_min": 0.5}, "gates": {"identify": []}})
    assert live.thresholds.similarity_min == 0.5  # what user_config names wins
    assert live.thresholds.detection_min == 0.7  # the same section's other fields keep the settings'
    assert live.duplicates == settings.duplicates  # a section it leaves out is not reset to the defaults
    assert live.gates.enrol == ["quality"] and live.gates.identify == []
    # An explicit null is a value: back to the manifest's default for that threshold.
    assert base.overlay({"thresholds": {"detection_min": None}}).thresholds.detection_min is None
    # The overlay is laid over the settings, never over an earlier overlay.
    assert live.overlay({}) == live and base.overlay({"gates": {}}).gates.identify == ["liveness", "morph"]


@pytest.mark.parametrize(
    "user_config, field",
    [
        ({"thresholdz": {}}, "thresholdz"),
        ({"duplicates": {"acton": "warn"}}, "duplicates.acton"),
        ({"duplicates": {"action": "maybe"}}, "duplicates.action"),
        ({"thresholds": 0.5}, "thresholds"),
        ({"max_batch_size": 8}, "max_batch_size"),
    ],
)
def test_a_user_config_stays_strict(user_config, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        UfmeSettings.load().live_config().overlay(user_config)
    assert field in {".".join(map(str, e["loc"])) for e in caught.value.errors()}


def test_explicit_values_are_what_a_source_set_with_secrets(monkeypatch):
    key = "A" * 43 + "="
    monkeypatch.setenv("UFME_THRESHOLDS__QUALITY_MIN", "0.2")
    settings = UfmeSettings.load(encryption={"key_id": "k1", "keys": {"k1": key}}, models={"liveness": []})
    explicit = settings.explicit_values()
    assert explicit == {
        "thresholds": {"quality_min": 0.2},
        "encryption": {"key_id": "k1", "keys": {"k1": key}},  # a replica needs the key itself, not ****
        "models": {"liveness": []},
    }
    assert UfmeSettings.load(**explicit) == settings
