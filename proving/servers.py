"""What the proving harness's local servers (SeaweedFS, Redis) share: free ports on 127.0.0.1, and
stopping a server's whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

STOP_TIMEOUT_S = 15.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 now (all held open together while chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_process_group(process: subprocess.Popen | None, *, kill: bool = False) -> None:
    """SIGTERM (SIGKILL with kill=True: a crash, not a shutdown) to a server started with
    start_new_session=True and its children; SIGKILL if it outlives STOP_TIMEOUT_S."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
