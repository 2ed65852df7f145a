"""On Kubernetes every Ray container (its Serve proxy reads it) gets FORWARDED_ALLOW_IPS from the
ConfigMap ufme-config, trusting no proxy until an overlay names the ingress controller's pods."""

from __future__ import annotations

import pytest

from tests.unit.k8s.test_audit_key import ENVS, container_environment, ray_containers
from ufme_ray.cluster import FORWARDED_ALLOW_IPS, forwarded_allow_ips
from ufme_ray.k8s import render


def assert_trusts_no_proxy(manifests) -> None:
    containers = ray_containers(manifests)
    assert {where.split("/")[0] for where, _ in containers} >= {"head", "stages", "shard", "compaction"}
    for where, container in containers:
        environment = container_environment(manifests, container, secrets={})
        assert environment.get(FORWARDED_ALLOW_IPS) == forwarded_allow_ips([]), where


@pytest.mark.parametrize("env", ENVS)
def test_every_ray_container_trusts_no_proxy_by_default(rendered, env):
    assert_trusts_no_proxy(rendered[env])


def test_the_base_and_the_gpu_worker_group_too(layout, tmp_path):
    from tests.unit.k8s.test_gpu_component import with_gpu_component

    assert_trusts_no_proxy(render.kustomize(layout.kuberay_dir / "base"))
    manifests = render.render("production", layout=with_gpu_component(tmp_path))
    assert "gpu/ray-worker" in dict(ray_containers(manifests))
    assert_trusts_no_proxy(manifests)
