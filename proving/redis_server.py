"""A real Redis server on 127.0.0.1 (Debian's `redis-server`) for GCS fault tolerance.

Used by the chaos harness and the test fixture of the head-loss and node-loss tests: a free port, a
throw-away password, no persistence (the chaos restarts the Ray head, never Redis). The password is
in files of mode 0600 (the server's config, and the file `ufme-ray up --redis-password-file` reads),
never on a command line.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from proving.servers import free_ports, stop_process_group
from ufme_ray.serving.auth import write_secret_file

_READY_TIMEOUT_S = 30.0


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise FileNotFoundError("the `redis-server` binary is missing: install Debian's redis-server package")
    return found


class RedisServer:
    """One `redis-server`: `start()`, `stop()`, `address`, `password_file`."""

    def __init__(self, root: Path):
        self._binary = redis_binary()
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.password = secrets.token_hex(24)
        self.password_file = root / "redis.password"
        write_secret_file(self.password_file, self.password)
        self._config = root / "redis.conf"
        write_secret_file(self._config, "\n".join([
            "bind 127.0.0.1", f"port {self.port}", "protected-mode yes", f"requirepass {self.password}",
            'save ""', "appendonly no", f"dir {root}", "daemonize no", "",
        ]))
        self.log_path = root / "redis.log"
        self._process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen([self._binary, str(self._config)], cwd=self.root, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process_group(process)

    def _wait_ready(self) -> None:
        """Poll until the server answers an authenticated PING (the port open is not enough: loading)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last_error: Exception | str | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    answer = b""
                    while answer.count(b"\r\n") < 2 and (chunk := sock.recv(64)):
                        answer += chunk
                if answer == b"+OK\r\n+PONG\r\n":
                    return
                last_error = answer.decode(errors="replace")
            except OSError as exc:
                last_error = exc
            time.sleep(0.1)  # polling interval, not a wait for readiness
        raise RuntimeError(f"redis-server not ready after {_READY_TIMEOUT_S}s ({last_error}):\n{self.log_path.read_text()[-3000:]}")
