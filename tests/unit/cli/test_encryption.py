"""`ufme-ray encryption status`: the check of a migration to encryption. It exits 1 while
plaintext objects are left, says what to do, and 0 once every template object is encrypted."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest

from tests.unit.gallery.conftest import unit_vectors
from ufme_ray.cli import main
from ufme_ray.config import GallerySettings
from ufme_ray.gallery.build import compact
from ufme_ray.gallery.encryption import EncryptedObjectStore, TemplateCipher
from ufme_ray.gallery.events import EnrolEvent, encode_segment
from ufme_ray.gallery.retention import apply_retention
from ufme_ray.gallery.shard import Shard
from ufme_ray.gallery.shard_types import Enrolment
from ufme_ray.gallery.storage import open_storage

DIM = 8
KEY = os.urandom(32)
SETTINGS = GallerySettings(num_shards=1)


@pytest.fixture
def uri(tmp_path: Path, monkeypatch) -> str:
    uri = (tmp_path / "store").as_uri()
    monkeypatch.delenv("UFME_CONFIG", raising=False)
    monkeypatch.setenv("UFME_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("UFME_STORAGE_URI", uri)
    monkeypatch.setenv("UFME_GALLERY__NUM_SHARDS", "1")
    return uri


def encryption_on(monkeypatch, *, accept_plaintext: bool) -> None:
    monkeypatch.setenv("UFME_ENCRYPTION__KEY_ID", "k1")
    monkeypatch.setenv("UFME_ENCRYPTION__KEYS", f'{{"k1": "{base64.b64encode(KEY).decode()}"}}')
    monkeypatch.setenv("UFME_ENCRYPTION__ACCEPT_PLAINTEXT", "true" if accept_plaintext else "false")


def status(capsys, *argv: str) -> tuple[int, str]:
    code = main(["encryption", "status", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out


def test_the_migration_is_checked_until_no_plaintext_is_left(uri, tmp_path, monkeypatch, capsys):
    raw = open_storage(uri)
    vectors = unit_vectors(np.random.default_rng(5), 6, DIM)
    shard = Shard.open(raw, 0, 1, DIM, SETTINGS)
    shard.enrol([Enrolment(f"s{i}", v) for i, v in enumerate(vectors)])
    shard.close()

    code, out = status(capsys)
    assert code == 0 and "encryption is off" in out and "plaintext: 1 (1 read by a restore)" in out

    encryption_on(monkeypatch, accept_plaintext=True)
    code, out = status(capsys, "--list")
    assert code == 1
    assert "plaintext: 1 (1 read by a restore)" in out and "events/shard-0/" in out
    assert "migration in progress" in out and "ufme-ray compact --now --wait" in out

    migrating = EncryptedObjectStore(raw, TemplateCipher({"k1": KEY}, "k1"), accept_plaintext=True)
    compact(migrating, num_shards=1, dim=DIM, settings=SETTINGS, work_dir=tmp_path)
    code, out = status(capsys)
    assert code == 1 and "plaintext: 1 (0 read by a restore)" in out and "encrypted with k1: 4 (current key)" in out
    apply_retention(migrating, retention_s=0)
    code, out = status(capsys)
    assert code == 0 and "plaintext: 0" in out
    assert "migration is complete; remove encryption.accept_plaintext" in out

    encryption_on(monkeypatch, accept_plaintext=False)
    code, out = status(capsys)
    assert code == 0 and "every template object is encrypted" in out
    planted = EnrolEvent(template_id=99, subject_id="x", vector=vectors[0], quality=1.0, timestamp=0.0)
    planted_key = "events/shard-0/00000000000000000007-00000000000000000007-e0000000009.seg"
    raw.write(planted_key, encode_segment(0, 9, 7, [planted]))
    code, out = status(capsys, "--list")
    assert code == 1 and "shards refuse them" in out and "planted" in out
    assert f"{planted_key}  (read by a restore)" in out


def test_an_unconfigured_key_id_fails_the_check(uri, monkeypatch, capsys):
    other = EncryptedObjectStore(open_storage(uri), TemplateCipher({"k0": os.urandom(32)}, "k0"))
    other.write("events/shard-0/00000000000000000001-00000000000000000001-e0000000001.seg", b"x")
    encryption_on(monkeypatch, accept_plaintext=False)
    code, out = status(capsys)
    assert code == 1 and "encrypted with k0: 1 (NOT CONFIGURED: unreadable)" in out
    assert "not configured (k0)" in out
