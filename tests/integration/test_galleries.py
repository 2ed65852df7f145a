"""Galleries through the real service: real photos, real Ray cluster, real HTTP.

Two galleries hold disjoint LFW identities. Stored photos are not live captures, so the test
galleries' own policy declares them stored (liveness not applicable; which also proves a gallery
policy reaches the gates); `default` keeps live captures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray

from tests.integration.conftest import NUM_SHARDS, SCOPED, SCOPED_GALLERIES, largest_face, lfw_people
from ufme_ray.serving.shard_actor import NAMESPACE, shard_actor_name

pytestmark = pytest.mark.ray

STAFF, VISITORS = SCOPED_GALLERIES[0], "it-visitors"
STORED_PHOTOS = {"gates": {"capture": "stored"}}


@pytest.fixture(scope="module")
def people(faces_dir: Path) -> list[tuple[str, Path, Path]]:
    return lfw_people(faces_dir, 6)


@pytest.fixture(scope="module")
def galleries(service, people):
    http = service.http
    for gallery in (STAFF, VISITORS):
        created = http.post("/api/v1/galleries", json={"gallery_id": gallery, "description": "it", "policy": STORED_PHOTOS})
        assert created.status_code == 201, created.text
    enrolled = {STAFF: people[0:2], VISITORS: people[2:4]}
    for gallery, members in enrolled.items():
        for name, photo, _ in members:
            answer = http.post(f"/api/v1/galleries/{gallery}/subjects/{name}/faces", files={"image": ("a.jpg", photo.read_bytes())})
            assert answer.status_code == 201, answer.text
    # One subject id in both galleries, a different person in each.
    for gallery, (_, photo, _) in ((STAFF, people[4]), (VISITORS, people[5])):
        answer = http.post(f"/api/v1/galleries/{gallery}/subjects/same-id/faces", files={"image": ("a.jpg", photo.read_bytes())})
        assert answer.status_code == 201, answer.text
    yield enrolled
    for gallery in (STAFF, VISITORS):
        http.delete(f"/api/v1/galleries/{gallery}")


def identify(client, gallery: str, photo: Path) -> dict:
    """The answer for the photo's main (largest) face; LFW photos often show people behind it."""
    answer = client.post(f"/api/v1/galleries/{gallery}/identify", files={"image": ("p.jpg", photo.read_bytes())})
    assert answer.status_code == 200, answer.text
    return largest_face(answer.json())


def test_identify_in_each_gallery_finds_only_its_own(service, people, galleries):
    for gallery, members in galleries.items():
        for name, _, probe in members:
            face = identify(service.http, gallery, probe)
            assert {c["gallery_id"] for c in face["candidates"]} == {gallery}
            assert face["decision"]["status"] == "match" and face["decision"]["subject_id"] == name
            assert face["face"]["capture"] == "stored"  # the gallery's policy, not default's
            assert face["face"]["gates"]["liveness"]["status"] == "not_applicable"
    # A staff member's photo searched among visitors finds no staff member.
    face = identify(service.http, VISITORS, people[0][2])
    assert not {c["subject_id"] for c in face["candidates"]} & {name for name, _, _ in galleries[STAFF]}
    both = service.http.post(
        "/api/v1/identify", files={"image": ("p.jpg", people[2][2].read_bytes())}, data={"galleries": f"{STAFF},{VISITORS}"}
    ).json()
    assert both["galleries"] == [STAFF, VISITORS]
    decision = largest_face(both)["decision"]
    assert (decision["gallery_id"], decision["subject_id"]) == (VISITORS, people[2][0])


def test_the_same_subject_id_in_two_galleries_is_two_subjects(service, people, galleries):
    staff = service.http.get(f"/api/v1/galleries/{STAFF}/subjects/same-id").json()
    visitors = service.http.get(f"/api/v1/galleries/{VISITORS}/subjects/same-id").json()
    assert staff["templates"][0]["template_id"] != visitors["templates"][0]["template_id"]
    probe = people[4][2].read_bytes()  # the staff same-id's second photo
    verdicts = {
        gallery: service.http.post(
            f"/api/v1/galleries/{gallery}/verify", files={"image": ("p.jpg", probe)}, data={"subject_id": "same-id"}
        ).json()
        for gallery in (STAFF, VISITORS)
    }
    assert verdicts[STAFF]["match"] is True and verdicts[VISITORS]["match"] is False
    assert service.http.get("/api/v1/subjects/same-id").status_code == 404  # nor is it in default
    listed = service.http.get(f"/api/v1/galleries/{STAFF}/subjects").json()
    assert listed["subject_ids"] == sorted([people[0][0], people[1][0], "same-id"]) and listed["total"] == 3


def test_a_key_scoped_to_one_gallery_gets_403_on_another(service, people, galleries):
    scoped = service.client_for(SCOPED)
    assert identify(scoped, STAFF, people[0][2])["decision"]["subject_id"] == people[0][0]
    refused = scoped.post(f"/api/v1/galleries/{VISITORS}/identify", files={"image": ("p.jpg", people[2][2].read_bytes())})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    listed = scoped.get("/api/v1/galleries")
    assert listed.status_code == 403  # listing galleries is for admin keys


def test_every_gallery_survives_the_shards_restarting(service, people, galleries):
    before = service.http.get(f"/api/v1/galleries/{STAFF}").json()
    for shard in range(NUM_SHARDS):
        ray.kill(ray.get_actor(shard_actor_name(shard), namespace=NAMESPACE), no_restart=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and service.http.get("/ready").status_code != 200:
        time.sleep(0.5)
    listed = {g["gallery_id"] for g in service.http.get("/api/v1/galleries", params={"limit": 1000}).json()["galleries"]}
    assert {STAFF, VISITORS, "default"} <= listed
    after = service.http.get(f"/api/v1/galleries/{STAFF}").json()
    assert (after["subjects"], after["templates"], after["policy"]) == (before["subjects"], before["templates"], STORED_PHOTOS)
    assert identify(service.http, STAFF, people[1][2])["decision"]["subject_id"] == people[1][0]


def test_a_deleted_gallery_is_gone(service, people, galleries):
    temp = "it-temporary"
    assert service.http.post("/api/v1/galleries", json={"gallery_id": temp, "policy": STORED_PHOTOS}).status_code == 201
    photo = people[0][1].read_bytes()
    assert service.http.post(f"/api/v1/galleries/{temp}/subjects/x/faces", files={"image": ("a.jpg", photo)}).status_code == 201
    deleted = service.http.delete(f"/api/v1/galleries/{temp}")
    assert deleted.status_code == 200 and deleted.json()["templates_erased"] == 1
    for answer in (
        service.http.get(f"/api/v1/galleries/{temp}"),
        service.http.post(f"/api/v1/galleries/{temp}/subjects/x/faces", files={"image": ("a.jpg", photo)}),
        service.http.post(f"/api/v1/galleries/{temp}/identify", files={"image": ("a.jpg", photo)}),
    ):
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_gallery", answer.text
    # The same id can be created again, empty.
    again = service.http.post("/api/v1/galleries", json={"gallery_id": temp})
    assert again.status_code == 201 and again.json()["subjects"] == 0
    assert service.http.delete(f"/api/v1/galleries/{temp}").status_code == 200
