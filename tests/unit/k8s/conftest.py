"""Fixtures for the Kubernetes side: rendered manifests, and a real HTTP server on 127.0.0.1 that
answers the few API paths the client uses (there is no Kubernetes API server here)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from ufme_ray.k8s import render

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DIR = REPO_ROOT.parent / "shared"
CRD_DIR = SHARED_DIR / "kuberay-crds"
TOKEN = "k8s-test-token"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any


Answer = tuple[int, Any]
Route = Callable[[Recorded], Answer]


@dataclass
class FakeServer:
    """A threading HTTP server; `routes[(METHOD, path)]` answers (status, JSON body) or a callable."""

    routes: dict[tuple[str, str], Answer | Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, answer: Answer | Route) -> None:
        self.routes[(method, path)] = answer

    def sent(self, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)]


def _handler(server: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode()
            path = unquote(split.path)
            recorded = Recorded(self.command, path, parse_qs(split.query), {k.lower(): v for k, v in self.headers.items()}, body)
            server.requests.append(recorded)
            answer = server.routes.get((self.command, path))
            if answer is None:
                status, payload = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": f"the server could not find the requested resource ({path})",
                                        "reason": "NotFound", "code": 404}
            else:
                status, payload = answer(recorded) if callable(answer) else answer
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _serve(name: str) -> Iterator[FakeServer]:
    server = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, name=name, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """Stands in for the Kubernetes API server."""
    yield from _serve("fake-k8s-api")


@pytest.fixture
def fake_dashboard() -> Iterator[FakeServer]:
    """Stands in for the Ray dashboard's job REST API (what JobSubmissionClient talks to)."""
    yield from _serve("fake-ray-dashboard")


def write_kubeconfig(path: Path, server_url: str, *, namespace: str = "ufme") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": server_url}}],
                "users": [{"name": "ci", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "ci", "namespace": namespace}}],
                "current-context": "fake",
            }
        )
    )
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path, fake_server: FakeServer) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", fake_server.url)


def api_resources(group_version: str, plurals: list[str]) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [{"name": p, "singularName": p[:-1], "namespaced": True, "kind": p, "verbs": ["get", "patch"]} for p in plurals],
    }


def serve_discovery(server: FakeServer, *, ray_plurals=("rayclusters", "rayservices", "rayjobs", "raycronjobs"), monitoring=True) -> None:
    if ray_plurals is not None:
        server.on("GET", "/apis/ray.io/v1", (200, api_resources("ray.io/v1", list(ray_plurals))))
    if monitoring:
        server.on("GET", "/apis/monitoring.coreos.com/v1", (200, api_resources("monitoring.coreos.com/v1", ["podmonitors", "prometheusrules"])))


def echo_apply(recorded: Recorded) -> Answer:
    """What an API server answers to a server-side apply: the object with metadata filled in."""
    body = dict(recorded.body)
    body["metadata"] = {**body["metadata"], "resourceVersion": "101", "generation": 1, "uid": "u-1"}
    return 200, body


def secret(token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ufme-ray-auth", "namespace": "ufme"},
            "data": {"auth_token": base64.b64encode(token.encode()).decode()}}


@pytest.fixture(scope="session")
def layout() -> render.Layout:
    return render.Layout.find(REPO_ROOT / "serve_config.yaml", REPO_ROOT / "kuberay")


@pytest.fixture(scope="session")
def rendered(layout: render.Layout) -> dict[str, list[dict[str, Any]]]:
    """Both environments rendered once per session (kubectl kustomize)."""
    return {env: render.render(env, layout=layout) for env in render.ENVIRONMENTS}


@pytest.fixture(scope="session")
def rendered_with_raycronjob(layout: render.Layout, tmp_path_factory) -> list[dict[str, Any]]:
    """production + the opt-in RayCronJob component, through a throwaway kustomization."""
    import os

    folder = tmp_path_factory.mktemp("with-raycronjob")
    relative = os.path.relpath(layout.kuberay_dir, folder)
    (folder / "kustomization.yaml").write_text(
        f"resources:\n  - {relative}/overlays/production\ncomponents:\n  - {relative}/components/raycronjob\n"
    )
    return render.kustomize(folder)
