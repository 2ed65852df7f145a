"""Every query of the Grafana dashboard, evaluated by a real Prometheus scraping the test cluster.

A Prometheus server (Debian package `prometheus`; `.ci/run` installs it) is started on 127.0.0.1
with its own port and temp storage, scraping the session cluster's metrics port (Ray's /metrics:
Ray's, Serve's and the application's ray_ufme_* series) every second. The scrape job mirrors the
PodMonitor in kuberay/base/monitoring.yaml: job `ufme/ufme-ray` (the Prometheus Operator names a
PodMonitor's job `<namespace>/<name>`) and the `ray_cluster`/`ray_group` labels its relabelings
add. While real traffic runs (enrol, identify, verify, analyze, a 404, a print-attack spoof for the
gates), every `expr` of every panel target must return at least one series with a finite value.

Grafana variables are substituted as Grafana would on a dashboard opened over this data:
  - query variables (`$cluster`, `label_values(metric, label)`): their own query is run on this
    Prometheus (it must return values too) and every value is selected, as a regex alternation
    `(a|b)` — what a multi-value variable expands to in a PromQL regex matcher;
  - `$__rate_interval`, `$__interval`, `$__range`: RANGE below, which covers the whole life of this
    Prometheus, so each rate() sees all the traffic sent (Grafana would choose
    max(4 x scrape interval, step + scrape interval), a window that only holds traffic of the last
    few seconds: with Ray exporting every few seconds that would make rates flicker to 0).
A `$` left after substitution fails the test: a new variable needs a rule here.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration.conftest import free_port

pytestmark = pytest.mark.ray

DASHBOARDS = sorted((REPO_ROOT / "kuberay/base/grafana").glob("*.json"))
MONITORING = REPO_ROOT / "kuberay/base/monitoring.yaml"
JOB = "ufme/ufme-ray"
CLUSTER_LABEL = "ufme-test"
RANGE = "10m"
READY_TIMEOUT_S = 60.0
SERIES_TIMEOUT_S = 240.0

# Dashboard queries that cannot return a series on the local test cluster, with the reason; they
# are still evaluated (a PromQL error fails the test) but need not return data. Review this list
# whenever the dashboard changes.
NOT_LOCALLY_AVAILABLE: dict[str, str] = {
    'sum by (deployment) (rate(ray_serve_deployment_error_counter_total{ray_cluster=~"$cluster"}[$__rate_interval]))':
        "Serve exports ray_serve_deployment_error_counter only once a deployment's code raised; healthy traffic raises "
        "none (every bad input is answered by a handled 4xx, tests/integration/test_bad_input.py), and provoking one "
        "means breaking a shard of the session's shared service",
}


def panel_targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every target, rows' nested panels included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel.get("title", "?"), target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))


class Prometheus:
    """One `prometheus` server on 127.0.0.1 with a temp storage folder; `stop()` ends it."""

    def __init__(self, root: Path, metrics_port: int):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: `apt-get install prometheus` (the Debian package; .ci/run installs it as root)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{
                    "targets": [f"127.0.0.1:{metrics_port}"],
                    "labels": {"ray_cluster": CLUSTER_LABEL, "ray_group": "headgroup"},
                }],
            }],
        }))
        (root / "data").mkdir()
        self.log_path = root / "prometheus.log"
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self._process.returncode}:\n{self.log_tail()}")
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {READY_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def api(self, path: str, **params: Any) -> Any:
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{path} {params}: {response.text}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def stop(self) -> None:
        self.http.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), service.metrics_port)
    try:
        server.wait_ready()
        wait_for(lambda: [t for t in server.api("targets")["activeTargets"] if t["health"] == "up"],
                 "the cluster's metrics port scraped (target up)", server, timeout_s=READY_TIMEOUT_S)
        yield server
    finally:
        server.stop()


def wait_for(condition, what: str, server: Prometheus, timeout_s: float):
    """Poll `condition` (truthy when met) every half second until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            targets = server.api("targets")["activeTargets"]
            raise AssertionError(f"timed out waiting for {what}; targets: {json.dumps(targets)[:2000]}\n{server.log_tail()}")
        time.sleep(0.5)


class Traffic:
    """Real requests in a loop on a thread until stopped: successes, a 404 and a spoof photo for the gates."""

    SUBJECT = "dashboard-probe"

    def __init__(self, service, faces_dir: Path):
        self._http = service.client_for("admin")
        self._live = (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()
        self._spoof = (faces_dir / "pad/print/silentface_image_F1.jpg").read_bytes()
        self._stop = threading.Event()
        self.statuses: dict[str, set[int]] = {}
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard-traffic", daemon=True)

    def _send(self, name: str, method: str, path: str, photo: bytes | None = None, data: dict | None = None) -> None:
        files = {"image": ("p.jpg", photo, "image/jpeg")} if photo is not None else None
        response = self._http.request(method, path, files=files, data=data)
        self.statuses.setdefault(name, set()).add(response.status_code)
        assert response.status_code < 500, f"{name}: {response.status_code} {response.text}"

    def _run(self) -> None:
        try:
            # A duplicate of a face another test enrolled under another subject answers 409: fine here.
            self._send("enrol", "POST", f"/api/v1/subjects/{self.SUBJECT}/faces", self._live)
            while not self._stop.is_set():
                self._send("identify", "POST", "/api/v1/identify", self._live)
                self._send("analyze", "POST", "/api/v1/analyze", self._live)
                self._send("verify", "POST", "/api/v1/verify", self._live, {"subject_id": self.SUBJECT})
                self._send("identify-spoof", "POST", "/api/v1/identify", self._spoof)
                self._send("missing-subject", "GET", "/api/v1/subjects/no-such-subject-for-dashboard")
                self._stop.wait(0.2)
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=180)
        self._http.delete(f"/api/v1/subjects/{self.SUBJECT}")
        self._http.close()


def variable_values(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable's values from its own label_values() query, as a regex alternation."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        assert variable.get("type") == "query", f"variable {variable['name']}: type {variable.get('type')} needs a rule here"
        definition = variable.get("definition") or variable["query"]["query"]
        match = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", definition)
        assert match, f"variable {variable['name']}: {definition!r} needs a rule here"
        selector, label = match.groups()
        found = wait_for(lambda: prometheus.api(f"label/{label}/values", **{"match[]": selector}),
                         f"variable {variable['name']} ({definition}) to have values", prometheus, SERIES_TIMEOUT_S)
        values[variable["name"]] = "(" + "|".join(regex_escape(v) for v in found) + ")"
    return values


def regex_escape(value: str) -> str:
    """A label value as a literal inside a PromQL regex string (Grafana's escaping: `\\.` for `.`)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def substitute(expr: str, variables: dict[str, str]) -> str:
    builtins = {"__rate_interval": RANGE, "__interval": RANGE, "__range": RANGE}
    for name, value in {**builtins, **variables}.items():
        expr = expr.replace("${" + name + "}", value)
        expr = re.sub(r"\$" + re.escape(name) + r"\b", lambda _: value, expr)
    assert "$" not in expr, f"a Grafana variable without a substitution rule in {expr!r}"
    return expr


def scrapes(prometheus: Prometheus) -> int:
    """Scrapes of the cluster's metrics port so far (samples of its `up` series)."""
    result = prometheus.query(f'count_over_time(up{{job="{JOB}"}}[{RANGE}])')
    return int(float(result[0]["value"][1])) if result else 0


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_query_returns_series_under_traffic(prometheus, service, faces_dir, path: Path):
    dashboard = json.loads(path.read_text())
    targets = list(panel_targets(dashboard))
    assert targets, f"{path.name}: no panel queries"
    exprs = {expr for _, expr in targets}
    assert set(NOT_LOCALLY_AVAILABLE) <= exprs, f"stale NOT_LOCALLY_AVAILABLE entries: {set(NOT_LOCALLY_AVAILABLE) - exprs}"

    with Traffic(service, faces_dir) as traffic:
        # Two scrapes after the traffic started, then poll every query until it has data.
        start = scrapes(prometheus)
        wait_for(lambda: scrapes(prometheus) >= start + 2, "two scrape cycles", prometheus, READY_TIMEOUT_S)
        variables = variable_values(prometheus, dashboard)
        queries = {expr: substitute(expr, variables) for expr in exprs}
        pending = {expr for expr in queries if expr not in NOT_LOCALLY_AVAILABLE}
        deadline = time.monotonic() + SERIES_TIMEOUT_S
        while pending and time.monotonic() < deadline and traffic.failure is None:
            pending = {expr for expr in pending if not has_finite_value(prometheus.query(queries[expr]))}
            if pending:
                time.sleep(1)
        statuses = traffic.statuses
    assert traffic.failure is None, f"the traffic failed: {traffic.failure!r}"

    for expr in NOT_LOCALLY_AVAILABLE:
        prometheus.query(queries[expr])  # evaluates (no PromQL error); may be empty here
    if pending:
        names = [n for n in prometheus.api("label/__name__/values") if n.startswith(("ray_ufme", "ray_serve"))]
        titles = {expr: title for title, expr in targets}
        report = "\n".join(f"  [{titles[e]}] {queries[e]}" for e in sorted(pending))
        raise AssertionError(
            f"{len(pending)} of {len(exprs)} dashboard queries returned no series with a value after "
            f"{SERIES_TIMEOUT_S:.0f} s of traffic (statuses sent: {statuses}):\n{report}\n"
            f"ray_ufme*/ray_serve* metrics this Prometheus has: {names}"
        )
    print(f"\n{path.name}: {len(exprs) - len(NOT_LOCALLY_AVAILABLE)} queries returned series; "
          f"{len(NOT_LOCALLY_AVAILABLE)} listed as not locally available; statuses sent: {statuses}")


def test_alert_rules_read_metrics_the_cluster_exports(prometheus, service, faces_dir):
    """The application and Serve metrics the PrometheusRule reads exist under those names (the
    kube_* series come from kube-state-metrics, which only runs on Kubernetes)."""
    (rule,) = [d for d in yaml.safe_load_all(MONITORING.read_text()) if d and d["kind"] == "PrometheusRule"]
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    names = {n for e in exprs for n in re.findall(r"\b((?:ray_|up\b)[a-zA-Z0-9_]*)\s*(?=[{\[)])", e)}
    assert names, exprs

    def missing() -> set[str]:
        return {n for n in names if not prometheus.query(f'count({{__name__="{n}", job="{JOB}"}})')}

    with Traffic(service, faces_dir) as traffic:
        deadline = time.monotonic() + SERIES_TIMEOUT_S
        while (absent := missing()) and time.monotonic() < deadline:
            time.sleep(1)
    assert traffic.failure is None, f"the traffic failed: {traffic.failure!r}"
    assert not absent, f"metrics the alerts read that the cluster does not export: {sorted(absent)}"
