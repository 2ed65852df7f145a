"""API keys carry the galleries they may use and their quota: the settings' rules, the principal the
service derives, the keys file (old files included) and `ufme-ray keys create | list`."""

from __future__ import annotations

import json
import pickle
import re

import pytest
from pydantic import ValidationError

from ufme_ray.cli import main
from ufme_ray.config import ApiKeySpec, AuthSettings
from ufme_ray.gallery.ids import SUBJECT_ID_PATTERN
from ufme_ray.orchestration.ratelimit import RateLimit
from ufme_ray.serving.auth import AuthError, KeyStore, Principal, add_key_to_file, authorize_gallery, key_digest

DIGEST = "0" * 64


def spec(**fields) -> ApiKeySpec:
    return ApiKeySpec(id="gate-3", role="search", sha256=DIGEST, **fields)


def test_gallery_ids_follow_the_subject_id_rule():
    schema = ApiKeySpec.model_json_schema()["properties"]["galleries"]["anyOf"][0]
    assert schema["items"]["pattern"] == SUBJECT_ID_PATTERN
    assert spec(galleries=["staff", "visitors", "Site-2:lobby@b"]).galleries == ["staff", "visitors", "Site-2:lobby@b"]
    for bad in ([], ["-staff"], ["staff visitors"], ["*"], "staff"):
        with pytest.raises(ValidationError):
            spec(galleries=bad)


def test_a_quota_needs_a_positive_rate():
    assert spec(rate=20, burst=40).rate == 20.0
    for bad in ({"rate": 0}, {"rate": -1}, {"rate": 1, "burst": 0}, {"burst": 5}):
        with pytest.raises(ValidationError):
            spec(**bad)


def test_the_principal_carries_galleries_and_quota():
    principal = Principal.of(spec(galleries=["staff", "visitors"], rate=20, burst=40))
    assert principal.galleries == frozenset({"staff", "visitors"}) and principal.rate == RateLimit(20.0, 40)
    assert principal.may_use("staff") and not principal.may_use("vip")
    authorize_gallery(principal, "visitors")
    with pytest.raises(AuthError) as refused:
        authorize_gallery(principal, "vip")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    assert refused.value.message == "the key 'gate-3' may not use gallery 'vip'"
    assert pickle.loads(pickle.dumps(principal)) == principal and hash(principal) == hash(Principal.of(spec(galleries=["visitors", "staff"], rate=20, burst=40)))


def test_a_key_without_galleries_or_quota_may_use_every_gallery_without_limit():
    principal = Principal.of(spec())
    assert principal.galleries is None and principal.rate is None
    assert principal.may_use("anything")
    authorize_gallery(principal, "anything")


def test_a_keys_file_written_before_galleries_and_quotas_still_reads(tmp_path):
    keys_file = tmp_path / "api-keys.json"
    keys_file.write_text(json.dumps([{"id": "ops", "role": "admin", "sha256": key_digest("ufme.ops.x")}]))
    principal = KeyStore(AuthSettings(keys_file=keys_file)).authenticate("ufme.ops.x")
    assert (principal.key_id, principal.galleries, principal.rate) == ("ops", None, None)


def test_add_key_to_file_stores_galleries_and_quota_and_leaves_defaults_out(tmp_path):
    keys_file = tmp_path / "api-keys.json"
    plain = add_key_to_file(keys_file, "ops", "admin")
    scoped = add_key_to_file(keys_file, "gate-3", "search", galleries=["staff", "visitors"], rate=20, burst=40)
    stored = json.loads(keys_file.read_text())
    assert [sorted(entry) for entry in stored] == [["id", "role", "sha256"], ["burst", "galleries", "id", "rate", "role", "sha256"]]
    store = KeyStore(AuthSettings(keys_file=keys_file))
    assert store.authenticate(plain).galleries is None
    principal = store.authenticate(scoped)
    assert principal.galleries == frozenset({"staff", "visitors"}) and principal.rate == RateLimit(20.0, 40)
    with pytest.raises(ValueError):
        add_key_to_file(keys_file, "gate-4", "search", galleries=[])


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UFME_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("UFME_AUTH__KEYS_FILE", raising=False)
    return tmp_path / "data"


def test_keys_create_and_list(data_dir, capsys):
    assert main(["keys", "create", "--id", "ops", "--role", "admin"]) == 0
    assert main(["keys", "create", "--id", "gate-3", "--role", "search", "--galleries", "staff,visitors",
                 "--rate", "20", "--burst", "40"]) == 0
    assert main(["keys", "create", "--id", "gate-4", "--role", "search", "--galleries", "*", "--rate", "2.5", "--captures", "live"]) == 0
    created = capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows == [
        ["ops", "admin", "-", "-", "*", "*"],
        ["gate-3", "search", "20", "40", "*", "staff,visitors"],
        ["gate-4", "search", "2.5", "3", "live", "*"],
    ]
    for key in re.findall(r"^ufme\.\S+$", created, re.M):  # never a key, nor a digest
        assert key not in out and key_digest(key) not in out


def test_keys_create_refuses_a_bad_gallery_id(data_dir, capsys):
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        main(["keys", "create", "--id", "gate-3", "--role", "search", "--galleries", "staff,-bad"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "ufme-ray keys create: error: argument --galleries: not gallery ids: '-bad' "
        "(a letter or digit, then up to 127 of A-Z a-z 0-9 . _ : @ -)"
    )
