"""The Python client's galleries: `UfmeClient(..., gallery=...)` acts in the gallery, against the
real routes (fake stages and gallery)."""

from __future__ import annotations

import pytest

from tests.unit.orchestration.test_engine import PHOTO
from tests.unit.serving.conftest import ADMIN
from ufme_ray.client import UfmeApiError, UfmeClient


@pytest.fixture
def clients(service):
    test_client, _, _ = service
    test_client.headers["Authorization"] = f"Bearer {ADMIN}"

    def client(gallery=None):
        made = UfmeClient("http://testserver", ADMIN, gallery=gallery)
        made._http = test_client  # the same httpx.Client API, served in-process
        return made

    return client


def test_a_client_with_a_gallery_acts_in_it(clients):
    admin, staff = clients(), clients("staff")
    created = admin.create_gallery("staff", "HQ", {"thresholds": {"similarity_min": 0.6}})
    assert created["gallery_id"] == "staff" and created["thresholds"]["similarity_min"] == 0.6
    enrolled = staff.enrol("ann", PHOTO, idempotency_key="k-1")
    assert enrolled["gallery_id"] == "staff"
    assert staff.enrol("ann", PHOTO, idempotency_key="k-1")["template_id"] == enrolled["template_id"]
    assert staff.subjects() == {"gallery_id": "staff", "subject_ids": ["ann"], "total": 1, "offset": 0, "limit": 100}
    assert staff.identify(PHOTO)["galleries"] == ["staff"]
    assert admin.identify(PHOTO, galleries=["staff", "default"])["galleries"] == ["staff", "default"]
    with pytest.raises(UfmeApiError) as missing:
        admin.subject("ann")  # default holds no ann
    assert missing.value.code == "unknown_subject"
    assert [g["gallery_id"] for g in admin.galleries()["galleries"]] == ["default", "staff"]
    assert admin.update_gallery("staff", description="HQ staff")["description"] == "HQ staff"
    assert admin.delete_gallery("staff") == {"gallery_id": "staff", "templates_erased": 1}
    with pytest.raises(UfmeApiError) as gone:
        staff.enrol("ann", PHOTO)
    assert (gone.value.status, gone.value.code) == (404, "unknown_gallery")
