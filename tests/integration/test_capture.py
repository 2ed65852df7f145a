"""Capture types through the real service: a genuine press photo that the liveness model scores low
is refused as a live capture and enrolled as a stored one; a replay attack is refused live."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def low_liveness_photo(service, faces_dir: Path) -> Path:
    """The first LFW photo with one face whose liveness score is below the threshold in force."""
    for photo in sorted((faces_dir / "lfw").glob("*/*.jpg")):
        answer = service.http.post("/api/v1/analyze", files={"image": ("p.jpg", photo.read_bytes())}).json()
        if len(answer["faces"]) == 1 and answer["faces"][0]["gates"]["liveness"]["status"] == "fail":
            if answer["faces"][0]["gates"]["quality"]["status"] == "pass":
                return photo
    pytest.fail("no single-face LFW photo fails the liveness gate: the threshold or the models changed")


def test_a_stored_photo_is_not_judged_for_liveness(service, low_liveness_photo):
    data = low_liveness_photo.read_bytes()
    live = service.http.post("/api/v1/subjects/capture-probe/faces", files={"image": ("p.jpg", data)}, data={"capture": "live"})
    assert live.status_code == 422 and live.json()["error"]["code"] == "liveness_gate_failed", live.text
    stored = service.http.post("/api/v1/subjects/capture-probe/faces", files={"image": ("p.jpg", data)}, data={"capture": "stored"})
    try:
        assert stored.status_code == 201, stored.text
        face = stored.json()["face"]
        assert face["capture"] == "stored" and face["gates"]["liveness"]["status"] == "not_applicable"
        assert face["gates"]["liveness"]["enforced"] is False and face["gates"]["quality"]["enforced"] is True
        found = service.http.post("/api/v1/identify", files={"image": ("p.jpg", data)}, data={"capture": "stored"}).json()
        assert found["faces"][0]["decision"]["subject_id"] == "capture-probe"
    finally:
        service.http.delete("/api/v1/subjects/capture-probe")


def test_a_replay_attack_declared_live_is_refused(service, faces_dir: Path):
    replay = (faces_dir / "pad/replay/silentface_image_F2.jpg").read_bytes()
    answer = service.http.post("/api/v1/subjects/replayer/faces", files={"image": ("r.jpg", replay)}, data={"capture": "live"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "liveness_gate_failed", answer.text
