"""A real HTTP server on 127.0.0.1 that answers fixed routes with JSON and records every request:
the stand-in for the Kubernetes API server and the Ray dashboard (there is neither here)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: Any


Answer = tuple[int, Any]
Route = Callable[[Recorded], Answer]


@dataclass
class FakeServer:
    """A threading HTTP server; `routes[(METHOD, path)]` answers (status, JSON body) or a callable."""

    routes: dict[tuple[str, str], Answer | Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""

    def on(self, method: str, path: str, answer: Answer | Route) -> None:
        self.routes[(method, path)] = answer

    def sent(self, method: str | None = None, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and r.path.startswith(path_prefix)]


def _handler(server: FakeServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode()
            path = unquote(split.path)
            recorded = Recorded(self.command, path, parse_qs(split.query), {k.lower(): v for k, v in self.headers.items()}, body)
            server.requests.append(recorded)
            answer = server.routes.get((self.command, path))
            if answer is None:
                status, payload = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "message": f"the server could not find the requested resource ({path})",
                                        "reason": "NotFound", "code": 404}
            else:
                status, payload = answer(recorded) if callable(answer) else answer
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def serve(name: str) -> Iterator[FakeServer]:
    server = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, name=name, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_port}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def ray_job(submission_id: str, status: str, entrypoint: str = "python -m ufme_ray.jobs.compact", end_time: int | None = None) -> dict:
    """One job as the dashboard's job API lists it (JobDetails)."""
    return {
        "type": "SUBMISSION", "job_id": None, "submission_id": submission_id, "driver_info": None, "status": status,
        "entrypoint": entrypoint, "message": "", "error_type": None, "start_time": None, "end_time": end_time,
        "metadata": {}, "runtime_env": {}, "driver_agent_http_address": None, "driver_node_id": None,
        "driver_exit_code": None,
    }


def serve_job_api(dashboard: FakeServer, jobs: list[dict]) -> None:
    """The dashboard's job REST API over `jobs` (what JobSubmissionClient uses, log tailing aside):
    version, list, status, submit (a submitted job is PENDING)."""
    dashboard.on("GET", "/api/version", (200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "test"}))
    dashboard.on("GET", "/api/jobs/", lambda _: (200, jobs))
    for job in jobs:
        dashboard.on("GET", f"/api/jobs/{job['submission_id']}", (200, job))

    def submit(recorded: Recorded) -> tuple[int, Any]:
        job = ray_job(recorded.body["submission_id"], "PENDING", recorded.body["entrypoint"])
        jobs.append(job)
        dashboard.on("GET", f"/api/jobs/{job['submission_id']}", (200, job))
        return 200, {"job_id": job["submission_id"], "submission_id": job["submission_id"]}

    dashboard.on("POST", "/api/jobs/", submit)
