"""Every class of bad input gets its 4xx with a reason over HTTP, and nothing it sends is stored."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.ray


def png_bomb_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


@pytest.fixture(scope="module")
def live_photo(faces_dir: Path) -> bytes:
    return (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()


REFERENCE = "errors-reference"
# Subjects the tests below try to enrol and which must never come to exist.
REFUSED_SUBJECTS = ("someone", "spoofer", "group")


@pytest.fixture(scope="module")
def reference_photo(service, faces_dir: Path) -> Path:
    """One subject enrolled for the module, so that "unchanged" compares a gallery that holds something."""
    for path in sorted((faces_dir / "deepface").glob("id*/*.jpg"))[:40]:
        response = service.http.post(f"/api/v1/subjects/{REFERENCE}/faces", files={"image": (path.name, path.read_bytes())})
        if response.status_code == 201:
            break
    else:
        pytest.fail("no deepface photo passes the enrolment gates")
    yield path
    service.http.delete(f"/api/v1/subjects/{REFERENCE}")


def gallery_state(service, reference_photo: Path) -> dict:
    """What a bad request must not change: per shard the templates and the last applied event (any
    enrol or delete moves it), the reference subject's template ids, and who an identify finds."""
    gallery = service.http.get("/api/v1/gallery")
    assert gallery.status_code == 200, gallery.text
    subject = service.http.get(f"/api/v1/subjects/{REFERENCE}")
    assert subject.status_code == 200, subject.text
    answer = service.http.post(
        "/api/v1/identify", files={"image": (reference_photo.name, reference_photo.read_bytes())}, data={"top_k": "5"}
    )
    assert answer.status_code == 200, answer.text
    return {
        "total_templates": gallery.json()["total_templates"],
        "shards": [(s["shard"], s["live_templates"], s["applied_seq"]) for s in gallery.json()["shards"]],
        "reference_templates": sorted(t["template_id"] for t in subject.json()["templates"]),
        "candidates": [(c["subject_id"], c["template_id"]) for f in answer.json()["faces"] for c in f["candidates"]],
    }


@pytest.fixture
def gallery_unchanged(service, reference_photo):
    before = gallery_state(service, reference_photo)
    assert before["total_templates"] >= 1 and before["candidates"][0][0] == REFERENCE, before
    yield
    assert gallery_state(service, reference_photo) == before
    for subject in REFUSED_SUBJECTS:
        assert service.http.get(f"/api/v1/subjects/{subject}").status_code == 404, subject


@pytest.mark.parametrize(
    "make, status, code",
    [
        (lambda photo: photo[: len(photo) // 2], 400, "corrupt_image"),
        (lambda photo: b"", 400, "empty_image"),
        (lambda photo: b"this is plain text, not a photo", 415, "unsupported_image_type"),
        (lambda photo: png_bomb_header(60_000, 60_000), 413, "image_too_large"),
        (lambda photo: encode(Image.new("L", (8000, 6000))), 413, "image_too_large"),
        (lambda photo: encode(Image.new("RGB", (1, 1))), 400, "image_too_small"),
        (lambda photo: encode(Image.new("RGB", (400, 400), "grey")), 422, "no_face"),
    ],
    ids=["truncated", "empty", "text", "bomb-header", "bomb-real", "1x1", "no-face"],
)
def test_bad_images_on_enrol(service, gallery_unchanged, live_photo, make, status, code):
    response = service.http.post("/api/v1/subjects/someone/faces", files={"image": ("x.jpg", make(live_photo))})
    assert_error(response, status, code)


def test_too_many_bytes(service, gallery_unchanged):
    response = service.http.post("/api/v1/identify", files={"image": ("big.jpg", b"\xff\xd8" + b"\0" * 10_500_000)})
    assert_error(response, 413, "image_too_large")


def test_spoof_is_refused_by_the_liveness_gate(service, gallery_unchanged, faces_dir: Path):
    response = service.http.post(
        "/api/v1/subjects/spoofer/faces", files={"image": ("f.jpg", (faces_dir / "pad/replay/silentface_image_F2.jpg").read_bytes())}
    )
    body = assert_error(response, 422, "liveness_gate_failed")
    gate = body["details"]["face"]["gates"]["liveness"]
    assert gate["status"] == "fail" and gate["threshold"] == 0.5 and gate["score"] < 0.5


def test_group_photo_is_refused_for_enrolment(service, gallery_unchanged, faces_dir: Path):
    response = service.http.post(
        "/api/v1/subjects/group/faces", files={"image": ("g.jpg", (faces_dir / "deepface/_multi_face/selfie-many-people.jpg").read_bytes())}
    )
    assert_error(response, 422, "multiple_faces")


def test_identify_reports_the_gate_for_a_spoof(service, faces_dir: Path):
    response = service.http.post("/api/v1/identify", files={"image": ("p.jpg", (faces_dir / "pad/print/silentface_image_F1.jpg").read_bytes())})
    assert response.status_code == 200
    decision = response.json()["faces"][0]["decision"]
    assert decision["status"] == "rejected" and "liveness" in decision["reason"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"image": 12}, 422, "invalid_request"),
        ({"image": ["a"]}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"image": "!!!not base64!!!"}, 400, "bad_base64"),
        ({"image": "aGVsbG8=", "top_k": 1000}, 422, "invalid_request"),
        ({"image": "aGVsbG8=", "top_k": "five"}, 422, "invalid_request"),
        ({"image": "aGVsbG8=", "extra": 1}, 422, "invalid_request"),
        ([1, 2, 3], 422, "invalid_request"),
    ],
)
def test_wrong_json(service, gallery_unchanged, body, status, code):
    assert_error(service.http.post("/api/v1/identify", json=body), status, code)


def test_malformed_json_and_media_type(service):
    assert_error(service.http.post("/api/v1/identify", content=b"{not json", headers={"content-type": "application/json"}), 400, "bad_json")
    assert_error(service.http.post("/api/v1/identify", content=b"abc", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")


def test_unknown_subject(service, live_photo):
    assert_error(service.http.get("/api/v1/subjects/nobody-here"), 404, "unknown_subject")
    assert_error(service.http.delete("/api/v1/subjects/nobody-here"), 404, "unknown_subject")
    response = service.http.post(
        "/api/v1/verify", json={"image": base64.b64encode(live_photo).decode(), "subject_id": "nobody-here"}
    )
    assert_error(response, 404, "unknown_subject")


@pytest.mark.parametrize("subject", ["../etc/passwd", "a b", "x" * 200, "%00"])
def test_bad_subject_ids(service, gallery_unchanged, live_photo, subject):
    response = service.http.post(f"/api/v1/subjects/{subject}/faces", files={"image": ("x.jpg", live_photo)})
    assert response.status_code in (404, 422), response.text
    assert "error" in response.json()


def test_verify_needs_exactly_one_reference(service, live_photo):
    encoded = base64.b64encode(live_photo).decode()
    assert_error(service.http.post("/api/v1/verify", json={"image": encoded}), 422, "invalid_request")
    assert_error(
        service.http.post("/api/v1/verify", json={"image": encoded, "image2": encoded, "subject_id": "x"}), 422, "invalid_request"
    )


def test_unknown_route_and_method(service):
    assert_error(service.http.get("/api/v1/nothing"), 404)
    assert_error(service.http.put("/api/v1/identify"), 405)
