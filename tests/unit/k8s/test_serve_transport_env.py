"""On Kubernetes every Ray container starts with Serve's gRPC transport (ufme_ray.serve_transport),
from the ConfigMap ufme-config, with a message limit that covers the image limits it runs with."""

from __future__ import annotations

import pytest

from tests.unit.k8s.test_audit_key import ENVS, container_environment, ray_containers
from ufme_ray import serve_transport
from ufme_ray.config import ImageLimits
from ufme_ray.k8s import render


def assert_every_ray_container_speaks_grpc_within_its_limits(manifests) -> None:
    containers = ray_containers(manifests)
    assert {where.split("/")[0] for where, _ in containers} >= {"head", "stages", "shard"}
    for where, container in containers:
        environment = container_environment(manifests, container, secrets={})
        limits = ImageLimits(**{
            field: int(environment[f"UFME_IMAGE__{field.upper()}"])
            for field in ("max_pixels", "max_bytes") if f"UFME_IMAGE__{field.upper()}" in environment
        })
        for name, value in serve_transport.THROUGHPUT_ENV.items():
            assert environment.get(name) == value, (where, name)
        serve_transport.check_message_limit(limits, int(environment[serve_transport.MESSAGE_LIMIT_ENV]))


def test_the_base_config_env_is_node_env_of_the_default_limits(layout):
    base = render.kustomize(layout.kuberay_dir / "base")
    config = next(m for m in base if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("ufme-config"))
    assert {k: config["data"][k] for k in serve_transport.node_env(ImageLimits())} == serve_transport.node_env(ImageLimits())
    assert_every_ray_container_speaks_grpc_within_its_limits(base)


@pytest.mark.parametrize("env", ENVS)
def test_every_ray_container_of_each_environment(rendered, env):
    assert_every_ray_container_speaks_grpc_within_its_limits(rendered[env])


def test_the_gpu_worker_group_too(tmp_path):
    from tests.unit.k8s.test_gpu_component import with_gpu_component

    manifests = render.render("production", layout=with_gpu_component(tmp_path))
    assert "gpu/ray-worker" in dict(ray_containers(manifests))
    assert_every_ray_container_speaks_grpc_within_its_limits(manifests)
