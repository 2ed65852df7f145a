from __future__ import annotations

from pathlib import Path

import pytest

from ufme_ray.gallery.storage import ObjectExistsError, ObjectNotFoundError, ObjectStore, open_storage


def test_write_read_list_delete(store: ObjectStore) -> None:
    store.write("events/shard-0/a.seg", b"alpha")
    store.write("events/shard-0/b.seg", b"beta")
    store.write("snapshots/0000000001/MANIFEST.json", b"{}")
    assert store.read("events/shard-0/a.seg") == b"alpha"
    assert store.list("events") == ["events/shard-0/a.seg", "events/shard-0/b.seg"]
    assert store.list("nothing-here") == []
    assert store.exists("events/shard-0/b.seg") and not store.exists("events/shard-0/c.seg")
    store.delete(["events/shard-0/a.seg", "events/shard-0/never-written"])
    assert store.list("events") == ["events/shard-0/b.seg"]
    with pytest.raises(ObjectNotFoundError):
        store.read("events/shard-0/a.seg")


def test_objects_are_write_once(store: ObjectStore) -> None:
    store.write("k", b"first")
    with pytest.raises(ObjectExistsError):
        store.write("k", b"second")
    assert store.read("k") == b"first"


def test_replace_overwrites_pointer(store: ObjectStore) -> None:
    store.replace("CURRENT", b"1")
    store.replace("CURRENT", b"2")
    assert store.read("CURRENT") == b"2"
    assert store.exists("CURRENT")
    assert store.list("") == ["CURRENT"]


def test_file_streaming_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    payload = bytes(range(256)) * 40_000  # 10 MB: more than one copy chunk
    source.write_bytes(payload)
    digest = store.write_file("parts/big.bin", source)
    target = tmp_path / "back.bin"
    assert store.read_to_file("parts/big.bin", target) == digest
    assert target.read_bytes() == payload


def test_local_write_leaves_no_temporary_files(file_store: ObjectStore, tmp_path: Path) -> None:
    file_store.write("a/b/c", b"x")
    names = sorted(p.name for p in (tmp_path / "store").rglob("*"))
    assert names == ["a", "b", "c"]


@pytest.mark.parametrize(
    "uri", ["http://example/x", "file://relative/path", "file:///tmp/x?y=1", "s3:///no-bucket"]
)
def test_open_storage_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        open_storage(uri)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/.tmp-x"])
def test_bad_keys_are_refused(file_store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError):
        file_store.write(key, b"x")
