"""Forwarded headers count only from `network.trusted_proxies`: `ufme-ray up` (and the test cluster,
through the same `start_local_head`) gives `ray start` the FORWARDED_ALLOW_IPS that Serve's HTTP
proxy (uvicorn) reads, and with no trusted proxy that value trusts no peer, loopback included."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
import uvicorn
from pydantic import ValidationError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ufme_ray import cluster
from ufme_ray.cluster import ClusterError, forwarded_allow_ips, start_local_head
from ufme_ray.cluster.provision import LocalHead, up
from ufme_ray.config import NetworkSettings, UfmeSettings


def client_seen(trusted: str, peer: str, forwarded_for: str = "6.6.6.6") -> str:
    """The client address an app behind uvicorn's proxy-headers middleware sees."""
    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"][0]

    scope = {"type": "http", "client": (peer, 50000), "headers": [(b"x-forwarded-for", forwarded_for.encode())]}
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))
    return seen["client"]


def test_uvicorn_takes_the_trusted_hosts_from_the_environment(monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    default = uvicorn.Config(app=None).forwarded_allow_ips
    assert client_seen(default, "127.0.0.1") == "6.6.6.6"  # the default this replaces: any local caller
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", forwarded_allow_ips([]))
    assert uvicorn.Config(app=None).forwarded_allow_ips == forwarded_allow_ips([])


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.7"])
def test_without_trusted_proxies_no_peer_may_name_the_client(peer):
    assert client_seen(forwarded_allow_ips([]), peer) == peer


def test_only_the_trusted_proxies_may_name_the_client():
    trusted = forwarded_allow_ips(NetworkSettings(trusted_proxies=["10.0.0.0/8", "192.168.1.7"]).trusted_proxies)
    assert trusted == "10.0.0.0/8,192.168.1.7"
    assert client_seen(trusted, "10.1.2.3") == "6.6.6.6"
    assert client_seen(trusted, "192.168.1.7") == "6.6.6.6"
    assert client_seen(trusted, "127.0.0.1") == "127.0.0.1"
    assert client_seen(trusted, "192.168.1.8") == "192.168.1.8"
    # Behind two trusted proxies, the first untrusted hop is the client.
    assert client_seen(trusted, "10.1.2.3", "6.6.6.6, 7.7.7.7, 10.9.9.9") == "7.7.7.7"


def test_trusted_proxies_are_ips_or_cidrs_uvicorn_understands():
    assert NetworkSettings(trusted_proxies=["::1", "fd00::/8"]).trusted_proxies == ["::1", "fd00::/8"]
    for bad in (["*"], ["ingress.local"], ["10.0.0.1/8"], ["300.1.1.1"]):
        with pytest.raises(ValidationError):
            NetworkSettings(trusted_proxies=bad)


@pytest.fixture
def ray_start_envs(monkeypatch) -> list[dict]:
    """The environment of each `ray start` that start_local_head runs (nothing is started)."""
    calls = []
    monkeypatch.setattr(cluster, "_check_port_free", lambda port, flag: None)
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: calls.append(kwargs["env"]) or subprocess.CompletedProcess(command, 0))
    return calls


PORTS = {"gcs_port": 1, "dashboard_port": 2, "metrics_port": 3, "agent_port": 4}


def test_ray_start_gets_forwarded_allow_ips(ray_start_envs, monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # whatever the caller's environment says
    start_local_head(num_cpus=1, **PORTS)
    start_local_head(num_cpus=1, **PORTS, trusted_proxies=["10.0.0.0/8", "10.1.0.1"])
    assert [env["FORWARDED_ALLOW_IPS"] for env in ray_start_envs] == ["none", "10.0.0.0/8,10.1.0.1"]
    assert all(env["RAY_AUTH_MODE"] == "token" for env in ray_start_envs)


def test_up_starts_the_head_with_the_settings_trusted_proxies_and_ingress(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ray-token")
    started = {}

    def start(**kwargs):
        started.update(kwargs)
        raise ClusterError("stop here")

    monkeypatch.setattr(cluster, "start_local_head", start)
    settings = UfmeSettings.load(
        data_dir=tmp_path / "data", model_dir=tmp_path, network={"trusted_proxies": ["10.0.0.0/8"], "ingress": "haproxy"}
    )
    with pytest.raises(ClusterError):
        up(settings, head=LocalHead(temp_dir=tmp_path / "ray"), report=lambda line: None)
    assert (started["trusted_proxies"], started["ingress"]) == (["10.0.0.0/8"], "haproxy")


def test_ray_start_gets_haproxy_and_direct_ingress_for_the_haproxy_ingress(ray_start_envs, monkeypatch):
    monkeypatch.setattr(cluster.serve_transport, "check_haproxy_binary", lambda: None)
    start_local_head(num_cpus=1, **PORTS)
    start_local_head(num_cpus=1, **PORTS, ingress="haproxy")
    assert [(env.get("RAY_SERVE_ENABLE_HA_PROXY"), env["RAY_SERVE_ENABLE_DIRECT_INGRESS"]) for env in ray_start_envs] == [
        (None, "0"), ("1", "1")
    ]


def test_the_ingress_is_serve_proxy_unless_haproxy_is_asked_for_and_nothing_else_is_taken():
    assert NetworkSettings().ingress == "serve-proxy"
    assert NetworkSettings(ingress="haproxy").ingress == "haproxy"
    with pytest.raises(ValidationError, match="ingress"):
        NetworkSettings(ingress="nginx")
