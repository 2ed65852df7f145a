"""The model store against the real model files in ../shared/models, served by a real local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODEL_DIR
from ufme_ray.models import store
from ufme_ray.models.errors import (
    ChecksumMismatchError,
    DownloadError,
    HttpStatusError,
    ModelCorruptError,
    ModelMissingError,
    NoUpstreamError,
)
from ufme_ray.models.manifest import packaged_manifest
from ufme_ray.models.store import (
    list_models,
    pull_model,
    pull_models,
    resolve_model_path,
    verify_models,
)

# The real files (UFME_MODEL_DIR or ../shared/models); missing files fail the tests, never skip them.
SHARED_MODELS = MODEL_DIR

MANIFEST = packaged_manifest()
YUNET = MANIFEST.get("yunet_2023mar")  # 232 KB
LIGHTQNET = MANIFEST.get("lightqnet_dm100")  # mirror-only
BAD = MANIFEST.get("minifasnet_v2")  # served with one flipped byte
ABSENT = MANIFEST.get("hairymax_bin")  # not on the mirror at all
SMALL = [YUNET.name, LIGHTQNET.name]


def _copy(spec, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(SHARED_MODELS / spec.file, folder / spec.file))


def _flip_byte(path: Path, offset: int = 1000) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _entries(folder: Path) -> list[str]:
    """Every name in the folder, hidden temp files included."""
    return sorted(os.listdir(folder)) if folder.exists() else []


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises more bytes than it sends, then drops the connection."""

    def do_GET(self) -> None:
        body = (SHARED_MODELS / YUNET.file).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serve() -> Iterator:
    """Starts ThreadingHTTPServers on 127.0.0.1 (free ports); returns a base URL per server."""
    running: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(handler) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # A short poll interval: shutdown() waits up to one interval.
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror folder: good copies of the small models, and BAD's file with one byte flipped."""
    folder = tmp_path_factory.mktemp("mirror")
    for spec in (YUNET, LIGHTQNET, BAD):
        _copy(spec, folder)
    _flip_byte(folder / BAD.file)
    return folder


@pytest.fixture
def http_mirror(serve, mirror: Path) -> str:
    return serve(functools.partial(_QuietHandler, directory=str(mirror)))


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    store.clear_verification_cache()
    yield
    store.clear_verification_cache()


# --- verify / list -------------------------------------------------------------------------------


def test_the_manifest_matches_every_staged_file() -> None:
    staged = [spec.name for spec in MANIFEST.models.values() if (SHARED_MODELS / spec.file).exists()]
    assert {YUNET.name, LIGHTQNET.name, BAD.name} <= set(staged)
    assert {status.state for status in verify_models(SHARED_MODELS, MANIFEST, staged)} == {"ok"}


def test_verify_reports_ok_missing_and_a_flipped_byte_as_corrupt(tmp_path: Path) -> None:
    _copy(YUNET, tmp_path)
    _flip_byte(_copy(LIGHTQNET, tmp_path))

    statuses = verify_models(tmp_path, MANIFEST, [YUNET.name, LIGHTQNET.name, BAD.name])

    ok, corrupt, missing = statuses
    assert (ok.state, ok.actual_sha256, ok.path) == ("ok", YUNET.sha256, tmp_path / YUNET.file)
    assert corrupt.state == "corrupt"
    assert corrupt.expected_sha256 == LIGHTQNET.sha256
    assert corrupt.actual_sha256 not in (None, LIGHTQNET.sha256)
    assert (missing.state, missing.actual_sha256) == ("missing", None)


def test_list_models_gives_state_and_source_for_every_model(tmp_path: Path) -> None:
    _copy(YUNET, tmp_path)

    rows = {row.name: row for row in list_models(MANIFEST, tmp_path)}

    assert set(rows) == set(MANIFEST.models)
    assert (rows[YUNET.name].state, rows[YUNET.name].source) == ("ok", YUNET.urls[0])
    assert rows[LIGHTQNET.name].state == "missing"
    assert rows[LIGHTQNET.name].source == f"mirror only: {LIGHTQNET.distribution}"
    assert rows["w600k_r50"].kind == "embedder"


# --- pull ----------------------------------------------------------------------------------------


def test_pull_from_an_http_mirror_installs_verified_files(tmp_path: Path, http_mirror: str) -> None:
    target = tmp_path / "models"

    results = pull_models(target, MANIFEST, SMALL, source=http_mirror, progress=False)

    assert [(r.name, r.outcome, r.source) for r in results] == [
        (spec.name, "downloaded", http_mirror + spec.file) for spec in (YUNET, LIGHTQNET)
    ]
    assert _entries(target) == sorted([YUNET.file, LIGHTQNET.file])
    assert {status.state for status in verify_models(target, MANIFEST, SMALL)} == {"ok"}


def test_a_wrong_checksum_is_reported_and_leaves_no_file(tmp_path: Path, http_mirror: str) -> None:
    [result] = pull_models(tmp_path, MANIFEST, [BAD.name], source=http_mirror, progress=False)

    assert result.outcome == "failed"
    error = result.error
    assert isinstance(error, ChecksumMismatchError)
    assert (error.name, error.expected_sha256, error.url) == (BAD.name, BAD.sha256, http_mirror + BAD.file)
    assert error.actual_sha256 != BAD.sha256
    assert BAD.sha256 in str(error) and error.actual_sha256 in str(error)
    assert _entries(tmp_path) == []


def test_a_404_is_a_typed_error_and_leaves_no_file(tmp_path: Path, http_mirror: str) -> None:
    with pytest.raises(HttpStatusError) as caught:
        pull_model(tmp_path, ABSENT, source=http_mirror, progress=False)

    assert (caught.value.status, caught.value.url) == (404, http_mirror + ABSENT.file)
    assert _entries(tmp_path) == []


def test_a_dropped_connection_leaves_no_partial_file(tmp_path: Path, serve) -> None:
    base = serve(_TruncatingHandler)

    with pytest.raises(DownloadError, match="download from"):
        pull_model(tmp_path, YUNET, source=base, progress=False)

    assert _entries(tmp_path) == []


def test_an_interrupt_mid_download_leaves_no_partial_file(
    tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class InterruptingBar:
        def __enter__(self):
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: int) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(store, "_progress_bar", lambda *args: InterruptingBar())
    target = tmp_path / "models"

    with pytest.raises(KeyboardInterrupt):
        pull_models(target, MANIFEST, [YUNET.name], source=mirror, progress=False)

    assert _entries(target) == []


@pytest.mark.parametrize("as_uri", [False, True], ids=["folder", "file-uri"])
def test_pull_from_a_folder_or_file_uri(tmp_path: Path, mirror: Path, as_uri: bool) -> None:
    source = mirror.as_uri() if as_uri else mirror

    results = pull_models(tmp_path, MANIFEST, SMALL, source=source, progress=False)

    assert [r.outcome for r in results] == ["downloaded", "downloaded"]
    assert _entries(tmp_path) == sorted([YUNET.file, LIGHTQNET.file])
    assert {status.state for status in verify_models(tmp_path, MANIFEST, SMALL)} == {"ok"}


def test_a_file_missing_from_a_folder_mirror_is_a_download_error(tmp_path: Path, mirror: Path) -> None:
    with pytest.raises(DownloadError, match=ABSENT.file):
        pull_model(tmp_path / "models", ABSENT, source=mirror, progress=False)


def test_a_model_without_upstream_says_so_plainly(tmp_path: Path) -> None:
    [result] = pull_models(tmp_path, MANIFEST, [LIGHTQNET.name], progress=False)

    assert isinstance(result.error, NoUpstreamError)
    message = str(result.error)
    assert message.startswith("lightqnet_dm100 has no upstream ONNX file: ")
    assert LIGHTQNET.distribution in message
    assert message.endswith("pull it from a mirror with --from")
    assert _entries(tmp_path) == []


def test_present_verified_files_are_skipped_even_without_upstream(tmp_path: Path, http_mirror: str) -> None:
    for spec in (YUNET, LIGHTQNET):
        _copy(spec, tmp_path)
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in _entries(tmp_path)}

    from_mirror = pull_models(tmp_path, MANIFEST, [YUNET.name], source=http_mirror, progress=False)
    no_mirror = pull_models(tmp_path, MANIFEST, [LIGHTQNET.name], progress=False)

    assert [r.outcome for r in from_mirror + no_mirror] == ["skipped", "skipped"]
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in _entries(tmp_path)} == before


def test_a_corrupt_present_file_is_replaced_and_force_redownloads(tmp_path: Path, http_mirror: str) -> None:
    _flip_byte(_copy(YUNET, tmp_path))
    _copy(LIGHTQNET, tmp_path)

    results = pull_models(tmp_path, MANIFEST, SMALL, source=http_mirror, progress=False, force=True)

    assert [r.outcome for r in results] == ["downloaded", "downloaded"]
    assert _entries(tmp_path) == sorted([YUNET.file, LIGHTQNET.file])
    assert {status.state for status in verify_models(tmp_path, MANIFEST, SMALL)} == {"ok"}


def test_upstream_urls_are_tried_in_order(tmp_path: Path, http_mirror: str) -> None:
    spec = YUNET.model_copy(update={"urls": [http_mirror + "gone.onnx", http_mirror + YUNET.file]})

    result = pull_model(tmp_path, spec, progress=False)

    assert (result.outcome, result.source) == ("downloaded", http_mirror + YUNET.file)
    assert _entries(tmp_path) == [YUNET.file]


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        (
            "unknownfs://bucket/models?endpoint_override=127.0.0.1:1&secret_key=hunter2",
            "unknownfs://bucket/models/{file}?endpoint_override=127.0.0.1:1&secret_key=***",
        ),
        ("unknownfs://AKID:hunter2@bucket/models/", "unknownfs://***@bucket/models/{file}"),
    ],
    ids=["query", "userinfo"],
)
def test_object_store_uris_keep_their_query_and_hide_credentials(tmp_path: Path, source: str, shown: str) -> None:
    with pytest.raises(DownloadError) as caught:
        pull_model(tmp_path, YUNET, source=source, progress=False)

    assert caught.value.url == shown.format(file=YUNET.file)
    assert "hunter2" not in str(caught.value)
    assert _entries(tmp_path) == []


# --- resolve -------------------------------------------------------------------------------------


def test_resolve_a_missing_file_says_where_it_looked_and_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError) as caught:
        resolve_model_path(tmp_path, YUNET)
    message = str(caught.value)
    assert YUNET.file in message and str(tmp_path) in message
    assert "`ufme-ray models pull yunet_2023mar`" in message

    with pytest.raises(ModelMissingError, match="--from"):
        resolve_model_path(tmp_path, LIGHTQNET)


def test_resolve_a_corrupt_file_gives_both_hashes(tmp_path: Path) -> None:
    _flip_byte(_copy(YUNET, tmp_path))

    with pytest.raises(ModelCorruptError) as caught:
        resolve_model_path(tmp_path, YUNET)

    assert caught.value.expected_sha256 == YUNET.sha256
    assert caught.value.actual_sha256 in str(caught.value) and YUNET.sha256 in str(caught.value)
    assert resolve_model_path(tmp_path, YUNET, verify=False) == tmp_path / YUNET.file


def test_resolve_hashes_once_until_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy(YUNET, tmp_path)
    hashed: list[Path] = []
    real_sha256 = store._sha256_file
    monkeypatch.setattr(store, "_sha256_file", lambda p: hashed.append(p) or real_sha256(p))

    assert resolve_model_path(tmp_path, YUNET) == path
    assert resolve_model_path(tmp_path, YUNET) == path
    assert hashed == [path]

    stat = path.stat()
    _flip_byte(path)
    # The filesystem's mtime granularity can be coarser than this test; make the change visible.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ModelCorruptError):
        resolve_model_path(tmp_path, YUNET)
    assert len(hashed) == 2
