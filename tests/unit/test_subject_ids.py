"""Every demo subject id is one the API can read and erase (the loader uses folder names as ids)."""

import re

from ufme_ray.serving.api.schemas import SUBJECT_ID_PATTERN


def test_every_demo_folder_name_is_an_addressable_subject_id(faces_dir):
    names = [p.name for folder in ("lfw", "deepface") for p in (faces_dir / folder).iterdir() if p.is_dir()]
    assert any("_" in name for name in names)  # LFW's Firstname_Lastname
    people = [n for n in names if not n.startswith("_")]  # "_multi_face" holds group photos: the loader skips it
    assert [n for n in people if not re.fullmatch(SUBJECT_ID_PATTERN, n)] == []


def test_path_like_and_unicode_ids_are_still_refused():
    for bad in ("../etc/passwd", "a/b", "_leading", "é", "a b", "x" * 129, ""):
        assert re.fullmatch(SUBJECT_ID_PATTERN, bad) is None, bad
