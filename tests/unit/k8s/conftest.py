"""Fixtures for the Kubernetes side: rendered manifests, and a fake API server (tests/unit/fake_http.py)
that answers the few API paths the client uses (there is no Kubernetes API server here)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.fake_http import Answer, FakeServer, Recorded, serve
from ufme_ray.k8s import render

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DIR = REPO_ROOT.parent / "shared"
CRD_DIR = SHARED_DIR / "kuberay-crds"
TOKEN = "k8s-test-token"


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    """Stands in for the Kubernetes API server."""
    yield from serve("fake-k8s-api")


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
