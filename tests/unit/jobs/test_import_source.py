"""What a bulk import reads: folders laid out <subject>/<photo>, and manifests; bad sources refused."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as papq
import pytest

from ufme_ray.jobs.import_source import ImportSourceError, list_source, read_photo


def test_a_folder_lists_its_photos_by_subject(tmp_path):
    for subject, name in (("bob", "2.jpg"), ("ann", "1.jpg"), ("ann", "0.png")):
        (tmp_path / subject).mkdir(exist_ok=True)
        (tmp_path / subject / name).write_bytes(b"x")
    (tmp_path / "loose.jpg").write_bytes(b"x")  # not under a subject: not a photo of the import
    (tmp_path / "ann" / "deeper").mkdir()
    (tmp_path / "ann" / "deeper" / "3.jpg").write_bytes(b"x")
    assert [(p["subject_id"], p["uri"].rsplit("/", 2)[-2:]) for p in list_source(str(tmp_path))] == [
        ("ann", ["ann", "0.png"]), ("ann", ["ann", "1.jpg"]), ("bob", ["bob", "2.jpg"]),
    ]


def test_manifests_in_csv_and_parquet(tmp_path):
    (tmp_path / "m.csv").write_text("subject_id,uri\nann,/a.jpg\nbob,s3://bucket/b.jpg\n")
    assert list_source(str(tmp_path / "m.csv")) == [{"subject_id": "ann", "uri": "/a.jpg"}, {"subject_id": "bob", "uri": "s3://bucket/b.jpg"}]
    papq.write_table(pa.table({"subject_id": ["ann"], "uri": ["/a.jpg"], "extra": [1]}), tmp_path / "m.parquet")
    assert list_source(str(tmp_path / "m.parquet")) == [{"subject_id": "ann", "uri": "/a.jpg"}]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: root / "missing", "not a folder"),
        (lambda root: root, "no <subject_id>/<photo> files"),
        (lambda root: (root / "bad.csv").write_text("who,where\nx,y\n") and root / "bad.csv", "lacks the column"),
        (lambda root: (root / "empty.csv").write_text("subject_id,uri\n") and root / "empty.csv", "lists no photo"),
        (lambda root: (root / "garbage.parquet").write_bytes(b"not parquet") and root / "garbage.parquet", "cannot read"),
    ],
    ids=["missing", "empty folder", "columns", "no rows", "not parquet"],
)
def test_bad_sources_are_refused_with_a_reason(tmp_path, make, message):
    with pytest.raises(ImportSourceError, match=message):
        list_source(str(make(tmp_path)))


def test_a_photo_is_read_one_byte_past_the_limit_at_most(tmp_path):
    (tmp_path / "big.jpg").write_bytes(b"y" * 100)
    assert read_photo(str(tmp_path / "big.jpg"), 10) == b"y" * 11
