"""The Gateway's `reconfigure`: Serve calls it on every replica start (and on every change) with the
whole `user_config`; the fields it sets are laid over the settings the replica was built with, so
a policy set through the settings file or UFME_* survives a user_config that does not name it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ufme_ray.config import LiveConfig, UfmeSettings
from ufme_ray.serving import gateway as gateway_module


class FakeEngine:
    def __init__(self, settings, *args):
        self.applied: list[LiveConfig] = []
        self.apply_live_config(settings.live_config())  # as Engine.__init__ does

    def apply_live_config(self, config: LiveConfig) -> None:
        self.applied.append(config)


@pytest.fixture
def make_gateway(monkeypatch):
    """A Gateway replica object built from settings JSON, its collaborators faked (no Ray, no models)."""
    monkeypatch.setattr(gateway_module, "Engine", FakeEngine)
    for name in ("install_services", "AuditTrail", "open_configured_storage", "KeyStore", "DemoLoader", "ServiceMetrics"):
        monkeypatch.setattr(gateway_module, name, lambda *args, **kwargs: None)
    monkeypatch.setattr(gateway_module.SubjectPseudonyms, "from_settings", staticmethod(lambda audit: None))

    def make(settings: UfmeSettings):
        # The class as written: @serve.ingress subclasses it with an async __init__ of Serve's own.
        cls = gateway_module.Gateway.func_or_class.__mro__[1]
        assert "reconfigure" in vars(cls)
        return cls(settings.transport_json(), *[None] * 6)

    return make


SETTINGS = dict(
    duplicates={"action": "warn"},
    thresholds={"detection_min": 0.7, "similarity_min": 0.3},
    gates={"verify": []},
)


def test_an_empty_user_config_reverts_nothing(make_gateway):
    replica = make_gateway(UfmeSettings.load(**SETTINGS))
    replica.reconfigure({})
    live = replica._engine.applied[-1]
    assert live.duplicates.action == "warn"  # today: reset to the default "reject"
    assert live.thresholds.detection_min == 0.7 and live.thresholds.similarity_min == 0.3
    assert live.gates.verify == []


def test_the_repo_profiles_user_config_keeps_what_it_does_not_name(make_gateway):
    """serve_config.yaml's Gateway user_config (thresholds and gates, no duplicates) on a replica
    whose settings set the duplicate policy and the detection threshold."""
    from tests.conftest import REPO_ROOT
    import yaml

    app = yaml.safe_load((REPO_ROOT / "serve_config.yaml").read_text())["applications"][0]
    user_config = next(d for d in app["deployments"] if d["name"] == "Gateway")["user_config"]
    replica = make_gateway(UfmeSettings.load(**SETTINGS))
    replica.reconfigure(user_config)
    live = replica._engine.applied[-1]
    assert live.duplicates.action == "warn" and live.thresholds.detection_min == 0.7
    assert live.thresholds.similarity_min == user_config["thresholds"]["similarity_min"]  # user_config outranks


def test_each_reconfigure_lays_the_whole_user_config_over_the_settings(make_gateway):
    replica = make_gateway(UfmeSettings.load(**SETTINGS))
    replica.reconfigure({"duplicates": {"action": "allow"}, "thresholds": {"similarity_min": 0.5}})
    assert replica._engine.applied[-1].duplicates.action == "allow"
    replica.reconfigure({"thresholds": {"similarity_min": 0.5}})  # duplicates dropped from user_config
    live = replica._engine.applied[-1]
    assert live.duplicates.action == "warn" and live.thresholds.similarity_min == 0.5


def test_an_invalid_user_config_is_refused_whole(make_gateway):
    replica = make_gateway(UfmeSettings.load(**SETTINGS))
    before = list(replica._engine.applied)
    for bad in ({"duplicates": {"action": "maybe"}}, {"gatez": {}}, {"thresholds": {"similarity_min": 2}}):
        with pytest.raises(ValidationError):
            replica.reconfigure(bad)
    assert replica._engine.applied == before
