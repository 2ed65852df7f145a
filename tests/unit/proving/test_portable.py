"""Reports record paths as seen from the working directory, never this machine's folders."""

from __future__ import annotations

from proving.portable import portable


def test_absolute_paths_are_recorded_relative_to_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert portable(tmp_path / "shared" / "faces") == "../shared/faces"
    assert portable(tmp_path / "repo" / "bench-results" / "chaos.json") == "bench-results/chaos.json"


def test_other_values_are_kept_as_text():
    assert portable("bench-results/load.json") == "bench-results/load.json"
    assert portable("http://127.0.0.1:8200") == "http://127.0.0.1:8200"
    assert portable(3) == "3"
