"""SubjectPseudonyms.from_settings: keyed HMAC pseudonyms from audit.subject_key or
audit.subject_key_file; without a key it refuses (raw subject ids would stay in the trail after an
erasure) unless audit.allow_plain_subject_ids says plain ids are wanted. The Gateway builds it in
its constructor, so a replica without a key fails to start with that message."""

from __future__ import annotations

import base64
import inspect
import os
from pathlib import Path

import pytest

from ufme_ray.audit import AuditRecord, SubjectPseudonyms
from ufme_ray.config import AuditSettings, ConfigError, UfmeSettings

KEY = base64.b64encode(bytes(range(32))).decode()


def test_plain_subject_ids_are_off_by_default():
    assert AuditSettings().allow_plain_subject_ids is False


def test_no_key_is_refused_naming_both_ways_out():
    with pytest.raises(ConfigError) as refused:
        SubjectPseudonyms.from_settings(AuditSettings())
    message = str(refused.value)
    assert "no audit subject key" in message
    assert "audit.subject_key" in message and "audit.subject_key_file" in message and "UFME_AUDIT__SUBJECT_KEY" in message
    assert "audit.allow_plain_subject_ids=true" in message


def test_plain_ids_only_when_explicitly_allowed():
    pseudonyms = SubjectPseudonyms.from_settings(AuditSettings(allow_plain_subject_ids=True))
    assert pseudonyms("alice") == "alice"


def test_an_inline_key_gives_stable_keyed_pseudonyms():
    pseudonyms = SubjectPseudonyms.from_settings(AuditSettings(subject_key=KEY))
    assert pseudonyms("alice") == pseudonyms("alice") != pseudonyms("bob")
    assert pseudonyms("alice").startswith("hmac:") and "alice" not in pseudonyms("alice")
    other = SubjectPseudonyms.from_settings(AuditSettings(subject_key=base64.b64encode(os.urandom(32)).decode()))
    assert other("alice") != pseudonyms("alice")
    record = AuditRecord(time=0.0, request_id="r", key_id="k", operation="enrol", outcome="201",
                         subject_ids=["alice"], decisions=[{"subject_id": "alice", "duplicate_of": "bob"}])
    stored = pseudonyms.record(record)
    assert stored.subject_ids == [pseudonyms("alice")] and stored.decisions == [{"subject_id": pseudonyms("alice"), "duplicate_of": pseudonyms("bob")}]


def test_a_key_wins_over_allowing_plain_ids():
    pseudonyms = SubjectPseudonyms.from_settings(AuditSettings(subject_key=KEY, allow_plain_subject_ids=True))
    assert pseudonyms("alice").startswith("hmac:")


def test_a_key_file_gives_the_same_pseudonyms_as_the_key(tmp_path: Path):
    # `base64` wraps long keys over lines and files end with a newline: both are fine
    (tmp_path / "key").write_text(KEY[:20] + "\n" + KEY[20:] + "\n")
    from_file = SubjectPseudonyms.from_settings(AuditSettings(subject_key_file=tmp_path / "key"))
    assert from_file("alice") == SubjectPseudonyms.from_settings(AuditSettings(subject_key=KEY))("alice")


def test_an_unreadable_or_empty_key_file_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read audit.subject_key_file"):
        SubjectPseudonyms.from_settings(AuditSettings(subject_key_file=tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"subject_key_file .*empty.*allow_plain_subject_ids"):
        SubjectPseudonyms.from_settings(AuditSettings(subject_key_file=tmp_path / "empty"))


@pytest.mark.parametrize(
    "key, problem",
    [("", "audit.subject_key is empty"), ("not base64!", "not valid base64"),
     (base64.b64encode(b"short").decode(), "decodes to 5 bytes")],
)
def test_a_bad_inline_key_is_refused(key, problem):
    with pytest.raises(ConfigError, match=problem):
        SubjectPseudonyms.from_settings(AuditSettings(subject_key=key))


def test_the_environment_sets_both(monkeypatch, tmp_path: Path):
    for name in [n for n in os.environ if n.startswith("UFME_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("UFME_AUDIT__ALLOW_PLAIN_SUBJECT_IDS", "true")
    assert UfmeSettings.load(model_dir=tmp_path, data_dir=tmp_path).audit.allow_plain_subject_ids is True
    monkeypatch.delenv("UFME_AUDIT__ALLOW_PLAIN_SUBJECT_IDS")
    monkeypatch.setenv("UFME_AUDIT__SUBJECT_KEY", KEY)
    settings = UfmeSettings.load(model_dir=tmp_path, data_dir=tmp_path)
    transported = UfmeSettings.model_validate_json(settings.transport_json())  # what a replica gets
    assert SubjectPseudonyms.from_settings(transported.audit)("alice").startswith("hmac:")


def test_a_gateway_replica_without_a_key_fails_to_start_with_that_message(tmp_path: Path):
    from ufme_ray.serving.gateway import Gateway

    # The class under Serve's ingress wrapper (whose own constructor is async).
    (gateway_class,) = [c for c in Gateway.func_or_class.__mro__
                        if "__init__" in vars(c) and c.__module__ == "ufme_ray.serving.gateway"
                        and not inspect.iscoroutinefunction(c.__init__)]
    settings = UfmeSettings(model_dir=tmp_path, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="no audit subject key.*allow_plain_subject_ids"):
        gateway_class.__init__(object.__new__(gateway_class), settings.transport_json(), None, None, None, None, None, None)
