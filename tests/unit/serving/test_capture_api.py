"""Capture type, quality filter and box over the real routes: keys limited to capture types, and
bad values refused with the field named."""

from __future__ import annotations

import pytest

from tests.unit.serving.conftest import ADMIN, IMAGE, key

KIOSK = "ufme.kiosk-7.secret-live-only"


@pytest.fixture
def client(served_with):
    return served_with(key("ops", "admin", ADMIN), key("kiosk-7", "search", KIOSK, captures=["live"]))


def as_key(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_may_declare_only_its_capture_types(client):
    refused = client.post("/api/v1/identify", files=IMAGE, data={"capture": "stored"}, headers=as_key(KIOSK))
    assert refused.status_code == 403 and "capture" in refused.json()["error"]["message"]
    undeclared = client.post("/api/v1/identify", files=IMAGE, headers=as_key(KIOSK))
    assert undeclared.status_code == 200 and undeclared.json()["faces"][0]["face"]["capture"] == "live"
    stored = client.post("/api/v1/analyze", files=IMAGE, data={"capture": "stored"}, headers=as_key(ADMIN))
    assert stored.json()["faces"][0]["gates"]["liveness"]["status"] == "not_applicable"


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        ("/api/v1/identify", {"capture": "selfie"}, "capture"),
        ("/api/v1/analyze", {"quality_filter": "extreme"}, "quality_filter"),
        ("/api/v1/subjects/ann/faces", {"box": "1,2,3"}, "box"),
        ("/api/v1/subjects/ann/faces", {"box": "10,10,5,5"}, "box"),
        ("/api/v1/subjects/ann/faces", {"box": "a,b,c,d"}, "box"),
        ("/api/v1/subjects/ann/faces", {"box": "nan,1,2,3"}, "box"),
    ],
)
def test_bad_values_are_refused_naming_the_field(client, path, data, field):
    answer = client.post(path, files=IMAGE, data=data, headers=as_key(ADMIN))
    assert answer.status_code == 422, answer.text
    assert field in answer.text


def test_a_box_that_names_no_face_is_refused(client):
    answer = client.post("/api/v1/subjects/ann/faces", files=IMAGE, data={"box": "0,0,20,20"}, headers=as_key(ADMIN))
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "face_not_found"
