"""`Idempotency-Key` on enrolment: a retry adds nothing and answers with the first template; the
key is scoped to the API key that sent it and bound to its subject and image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.unit.serving.conftest import AS_ADMIN, AS_ENROLLER, IMAGE

OTHER_IMAGE = {"image": ("b.png", cv2.imencode(".png", np.full((400, 400, 3), 90, np.uint8))[1].tobytes(), "image/png")}


def enrol(client, subject_id, key, *, image=IMAGE, headers=AS_ADMIN):
    return client.post(f"/api/v1/subjects/{subject_id}/faces", files=image, headers={**headers, "Idempotency-Key": key})


def templates(client, subject_id):
    return [t["template_id"] for t in client.get(f"/api/v1/subjects/{subject_id}", headers=AS_ADMIN).json()["templates"]]


def test_a_retry_answers_with_the_first_template_and_adds_none(service):
    client, _, _ = service
    first, retry = enrol(client, "alice", "order-17"), enrol(client, "alice", "order-17")
    assert first.status_code == retry.status_code == 201, retry.text
    assert retry.json()["template_id"] == first.json()["template_id"]
    assert templates(client, "alice") == [first.json()["template_id"]]


def test_without_a_key_each_request_adds_a_template(service):
    client, _, _ = service
    for _ in range(2):
        assert client.post("/api/v1/subjects/alice/faces", files=IMAGE, headers=AS_ADMIN).status_code == 201
    assert len(templates(client, "alice")) == 2


@pytest.mark.parametrize("subject_id, image", [("bob", IMAGE), ("alice", OTHER_IMAGE)], ids=["other subject", "other image"])
def test_a_key_reused_for_another_request_is_refused(service, subject_id, image):
    client, _, services = service
    # The fake stages see one face in every photo; with the duplicate screen on, it would refuse
    # that face under another subject first (409 duplicate_face).
    services.engine.apply_live_config(services.settings.live_config().overlay({"duplicates": {"action": "allow"}}))
    assert enrol(client, "alice", "order-17").status_code == 201
    reused = enrol(client, subject_id, "order-17", image=image)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused", reused.text
    assert len(templates(client, "alice")) == 1


def test_keys_are_scoped_to_the_api_key_that_sent_them(service):
    client, _, _ = service
    ours, theirs = enrol(client, "alice", "order-17"), enrol(client, "alice", "order-17", headers=AS_ENROLLER)
    assert ours.status_code == theirs.status_code == 201
    assert ours.json()["template_id"] != theirs.json()["template_id"]


def test_an_erased_subjects_keys_are_forgotten(service):
    client, _, _ = service
    first = enrol(client, "alice", "order-17").json()["template_id"]
    assert client.delete("/api/v1/subjects/alice", headers=AS_ADMIN).status_code == 200
    again = enrol(client, "alice", "order-17")
    assert again.status_code == 201 and again.json()["template_id"] != first


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "naïve"], ids=["empty", "space", "too long", "non-ascii"])
def test_a_malformed_key_is_refused_before_anything_runs(service, key):
    client, store, _ = service
    answer = client.post(
        "/api/v1/subjects/alice/faces", files=IMAGE, headers={**AS_ADMIN, "Idempotency-Key": key.encode("utf-8")}
    )
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", answer.text
    assert client.get("/api/v1/subjects/alice", headers=AS_ADMIN).status_code == 404
