"""One error convention for every command: an expected error is one `ufme-ray: error: …` line on
stderr (no traceback) and its exit code (see `ufme-ray --help`)."""

from __future__ import annotations

import socket

import pytest

from ufme_ray.cli import main


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UFME_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("UFME_API_KEY", raising=False)
    return tmp_path / "data"


def error_line(capsys) -> str:
    """The last line on stderr (a progress bar may come before it), which must be the error."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n"), err
    line = err.splitlines()[-1]
    assert line.startswith("ufme-ray: error: "), err
    return line


def test_a_key_id_that_exists_is_a_usage_error(capsys, data_dir):
    assert main(["keys", "create", "--id", "ops", "--role", "admin"]) == 0
    capsys.readouterr()
    assert main(["keys", "create", "--id", "ops", "--role", "search"]) == 2
    assert error_line(capsys) == f"ufme-ray: error: a key with id 'ops' already exists in {data_dir / 'api-keys.json'}"


def test_an_unreachable_service_fails_with_its_address(capsys, tmp_path):
    (tmp_path / "photos" / "alice").mkdir(parents=True)
    port = closed_port()
    assert main(["demo", "--url", f"http://127.0.0.1:{port}", "--folder", str(tmp_path / "photos")]) == 1
    assert f"cannot reach http://127.0.0.1:{port}/" in error_line(capsys)


def test_an_unreachable_job_server_fails(capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    assert main(["compact", "--address", f"http://127.0.0.1:{closed_port()}", "--slot", "s1"]) == 1
    assert "cannot reach the Ray job server" in error_line(capsys)


def test_a_missing_demo_folder_and_an_unrenderable_request_are_usage_errors(capsys, tmp_path, monkeypatch):
    assert main(["demo", "--folder", str(tmp_path / "nowhere")]) == 2
    assert "demo folder" in error_line(capsys)
    # Regression: no folder at all loaded the working directory's sub-folders as subjects.
    monkeypatch.delenv("UFME_DEMO_DIR", raising=False)
    assert main(["demo"]) == 2
    assert "no demo folder" in error_line(capsys)
    assert main(["k8s", "render", "--env", "staging", "--serve-config-only", "--image", "x"]) == 2
    assert "--image does not apply" in error_line(capsys)


def test_an_unwritable_file_is_a_failure(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("UFME_DATA_DIR", str(blocker / "data"))  # a folder inside a file
    assert main(["keys", "create", "--id", "ops", "--role", "admin"]) == 1
    assert "Not a directory" in error_line(capsys)
