"""Bulk import through the real cluster: a Ray Job running a Ray Data pipeline over real photos,
bad files reported per photo, exactly once across a rerun and across a job stopped midway."""

from __future__ import annotations

import shutil
import time
import typing
import uuid
from pathlib import Path

import pyarrow.parquet as papq
import pytest
from ray.job_submission import JobStatus

from tests.integration.conftest import largest_face
from ufme_ray import cluster
from ufme_ray.cli import main as cli
from ufme_ray.jobs import submit
from ufme_ray.orchestration.imports import Outcome

pytestmark = pytest.mark.ray

@pytest.fixture(scope="module")
def source(faces_dir: Path, tmp_path_factory) -> Path:
    """All of ../shared/faces/lfw as <subject_id>/<photo>, with hostile files beside the photos."""
    root = tmp_path_factory.mktemp("import-source")
    for folder in sorted((faces_dir / "lfw").iterdir()):
        shutil.copytree(folder, root / folder.name)
    first = sorted(root.iterdir())[0]
    (first / "notes.jpg").write_text("not an image")
    good = sorted(first.glob("*_0001.jpg"))[0]
    (first / "truncated.jpg").write_bytes(good.read_bytes()[:2000])
    (root / "bad subject id").mkdir()
    shutil.copy(good, root / "bad subject id" / "photo.jpg")
    return root


@pytest.fixture
def run_cli(service, monkeypatch):
    monkeypatch.setenv("UFME_API_KEY", service.keys["admin"])

    def run(*args: str) -> int:
        return cli(["import", *args, "--address", service.dashboard.address, "--url", service.url])

    return run


def new_gallery(service) -> str:
    gallery = f"import-{uuid.uuid4().hex[:8]}"
    created = service.http.post("/api/v1/galleries", json={"gallery_id": gallery})
    assert created.status_code == 201, created.text
    return gallery


def report(service, import_id: str) -> list[dict]:
    state = service.http.get(f"/api/v1/imports/{import_id}").json()
    assert state["state"] == "done", state
    return papq.read_table(Path(service.storage_uri.removeprefix("file://")) / state["report"]).to_pylist()


def templates(service, gallery: str) -> dict[str, list[int]]:
    subjects = service.http.get(f"/api/v1/galleries/{gallery}/subjects", params={"limit": 1000}).json()["subject_ids"]
    return {s: [t["template_id"] for t in service.http.get(f"/api/v1/galleries/{gallery}/subjects/{s}").json()["templates"]] for s in subjects}


def test_an_import_reports_every_photo_and_a_rerun_adds_nothing(service, source, run_cli):
    gallery = new_gallery(service)
    import_id = f"it-{uuid.uuid4().hex[:8]}"
    assert run_cli(str(source), "--gallery", gallery, "--import-id", import_id, "--wait") == 0
    rows = report(service, import_id)
    photos = [p for p in source.rglob("*") if p.is_file()]
    assert len(rows) == len(photos)
    by_uri = {Path(r["uri"]).name: r for r in rows}
    assert by_uri["notes.jpg"]["status"] == "unreadable" and by_uri["truncated.jpg"]["status"] == "unreadable"
    assert [r["status"] for r in rows if r["subject_id"] == "bad subject id"] == ["invalid_subject_id"]
    enrolled = {r["sha256"]: r["template_id"] for r in rows if r["status"] == "enrolled"}
    assert len(enrolled) >= 250  # of 401 LFW photos; the rest hold several comparable faces or match another subject
    assert {r["status"] for r in rows} <= set(typing.get_args(Outcome)) - {"unavailable"}
    stored = templates(service, gallery)
    assert sum(map(len, stored.values())) == len(enrolled)
    # Identify finds the imported subjects.
    for row in [r for r in rows if r["status"] == "enrolled"][::40]:
        answer = service.http.post(
            f"/api/v1/galleries/{gallery}/identify", files={"image": ("p.jpg", Path(row["uri"]).read_bytes())},
            data={"capture": "stored", "top_k": "1"},
        ).json()
        decision = largest_face(answer)["decision"]
        assert decision["subject_id"] == row["subject_id"], (row, decision)
    assert run_cli(str(source), "--gallery", gallery, "--import-id", import_id, "--wait") == 0
    again = report(service, import_id)
    assert {r["sha256"]: r["template_id"] for r in again if r["status"] == "enrolled"} == enrolled
    assert templates(service, gallery) == stored
    audit = service.http.get("/api/v1/audit", params={"operation": "import"}).json()["records"]
    assert [r["galleries"] for r in audit if r["request_id"] == f"import-{import_id}"] == [[gallery], [gallery]]


def test_an_import_stopped_midway_then_rerun_equals_a_clean_import(service, source, run_cli):
    clean, stopped = new_gallery(service), new_gallery(service)
    assert run_cli(str(source), "--gallery", clean, "--import-id", f"clean-{clean}", "--wait") == 0
    import_id = f"stopped-{stopped}"
    assert run_cli(str(source), "--gallery", stopped, "--import-id", import_id) == 0
    jobs = submit.connect(service.dashboard.address, cluster.ensure_auth_token())
    job_id = f"ufme-import-{import_id}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # stop it once some photos, not all, are enrolled
        stored = sum(map(len, templates(service, stopped).values()))
        if stored > 0 or jobs.get_job_status(job_id).is_terminal():
            break
        time.sleep(0.2)
    jobs.stop_job(job_id)
    while not jobs.get_job_status(job_id).is_terminal():
        time.sleep(0.5)
    assert jobs.get_job_status(job_id) == JobStatus.STOPPED
    clean_count = {s: len(ts) for s, ts in templates(service, clean).items()}
    assert 0 < sum(map(len, templates(service, stopped).values())) < sum(clean_count.values())  # midway
    assert run_cli(str(source), "--gallery", stopped, "--import-id", import_id, "--wait") == 0
    assert {s: len(ts) for s, ts in templates(service, stopped).items()} == clean_count


def test_bad_requests_are_refused_before_any_job(service, source, run_cli, tmp_path, capsys):
    assert run_cli(str(tmp_path / "missing"), "--gallery", "default") == 2
    assert "not a folder" in capsys.readouterr().err
    assert run_cli(str(source), "--gallery", "no-such-gallery") == 2
    assert "no-such-gallery" in capsys.readouterr().err
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject,path\nx,/nowhere.jpg\n")
    assert run_cli(str(manifest), "--gallery", "default") == 2
    assert "subject_id" in capsys.readouterr().err
    assert service.http.get("/api/v1/imports/never-ran").status_code == 404
