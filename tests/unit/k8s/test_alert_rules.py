"""The PrometheusRule's alerts, evaluated by Prometheus's own rule engine (`promtool test rules`).

The rule groups are taken from the rendered manifests of each environment (kubectl kustomize, the
`rendered` fixture), written as a plain rules file, and run against the promtool test cases below:
for every alert, series that must fire it (with its labels and rendered annotations) and series
that must leave it silent (healthy values, the `for:` window not yet elapsed, excluded label
values). promtool comes from the Debian package `prometheus` (`.ci/run` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ENVS = ("staging", "production")

# Label sets as the PodMonitor leaves them on the scraped series (ray_cluster/ray_group relabelled).
POD = 'ray_cluster="ufme", ray_group="headgroup"'
IDENTIFY = f'endpoint="POST /api/v1/identify", {POD}'
DEMO_LOAD = f'endpoint="POST /api/v1/demo/load", {POD}'
KSM = 'namespace="ufme", job="kube-state-metrics"'
CRONJOB = f'{KSM}, cronjob="ufme-compaction"'


def _latency(endpoint_labels: str, le_1000: str, le_2000: str) -> list[dict[str, str]]:
    """A latency histogram whose observations (per minute) fall at or below 1 s or in (1 s, 2 s]."""
    return [
        {"series": f'ray_ufme_request_latency_ms_bucket{{{endpoint_labels}, le="{le}"}}', "values": values}
        for le, values in (("100", "0x40"), ("1000", le_1000), ("2000", le_2000), ("+Inf", le_2000))
    ]


# Each case: one promtool test (its own input series), its alert and the alerts expected at a time.
# An empty `exp_alerts` means the alert must be silent then (neither firing nor absent-by-accident:
# promtool compares the full list of firing alerts of that name).
CASES: list[dict[str, Any]] = [
    # ---- UfmeApiLatencyP95High: p95 > 1000 ms for 10 minutes, /demo/load excluded.
    {
        "name": "identify slower than 1 s at p95 fires after 10 minutes",
        "interval": "1m",
        "input_series": _latency(IDENTIFY, "0x40", "0+10x40"),  # every request in (1 s, 2 s]
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "UfmeApiLatencyP95High", "exp_alerts": []},  # still pending
            {
                "eval_time": "20m",
                "alertname": "UfmeApiLatencyP95High",
                "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "endpoint": "POST /api/v1/identify"},
                    "exp_annotations": {
                        "summary": "UFME-Ray p95 latency of POST /api/v1/identify is 1.95k ms",
                        "description": "The 95th percentile of API latency has been above 1 s for 10 minutes.",
                    },
                }],
            },
        ],
    },
    {
        "name": "fast identify and a slow demo load stay silent",
        "interval": "1m",
        "input_series": _latency(IDENTIFY, "0+10x40", "0+10x40") + _latency(DEMO_LOAD, "0x40", "0+10x40"),
        "alert_rule_test": [{"eval_time": "30m", "alertname": "UfmeApiLatencyP95High", "exp_alerts": []}],
    },
    # ---- UfmeApi5xxRateHigh: more than 5% of requests 5xx for 5 minutes.
    {
        "name": "half of the requests answered 503 fires after 5 minutes",
        "interval": "1m",
        "input_series": [
            {"series": f'ray_ufme_requests_total{{{IDENTIFY}, status="200"}}', "values": "0+60x30"},
            {"series": f'ray_ufme_requests_total{{{IDENTIFY}, status="503"}}', "values": "0+60x30"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "UfmeApi5xxRateHigh", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "UfmeApi5xxRateHigh",
                "exp_alerts": [{
                    "exp_labels": {"severity": "critical"},
                    "exp_annotations": {
                        "summary": "UFME-Ray answers 50% of requests with 5xx",
                        "description": "More than 5% of API requests failed with a server error for 5 minutes "
                        "(503 included: gallery not ready).",
                    },
                }],
            },
        ],
    },
    {
        "name": "1% of 5xx, 4xx answers and no traffic at all stay silent",
        "interval": "1m",
        "input_series": [
            {"series": f'ray_ufme_requests_total{{{IDENTIFY}, status="200"}}', "values": "0+99x20 1980x20"},
            {"series": f'ray_ufme_requests_total{{{IDENTIFY}, status="500"}}', "values": "0+1x20 20x20"},
            {"series": f'ray_ufme_requests_total{{{IDENTIFY}, status="422"}}', "values": "0+50x20 1000x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "15m", "alertname": "UfmeApi5xxRateHigh", "exp_alerts": []},
            {"eval_time": "38m", "alertname": "UfmeApi5xxRateHigh", "exp_alerts": []},  # no requests since 20m
        ],
    },
    # ---- UfmeServeProxyDown: no UFME-Ray pod scraped for 5 minutes.
    {
        "name": "every pod down fires",
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="ufme/ufme-ray", instance="10.0.0.1:8080"}', "values": "1x5 0x20"},
            {"series": 'up{job="ufme/ufme-ray", instance="10.0.0.2:8080"}', "values": "1x5 0x20"},
            {"series": 'up{job="kube-state-metrics", instance="10.0.0.9:8080"}', "values": "1x25"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "UfmeServeProxyDown", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "UfmeServeProxyDown",
                "exp_alerts": [{
                    "exp_labels": {"severity": "critical"},
                    "exp_annotations": {
                        "summary": "No UFME-Ray pod can be scraped",
                        "description": "Prometheus has scraped no UFME-Ray Ray pod for 5 minutes.",
                    },
                }],
            },
        ],
    },
    {
        "name": "no UFME-Ray target left at all fires",
        "interval": "1m",
        "input_series": [{"series": 'up{job="kube-state-metrics", instance="10.0.0.9:8080"}', "values": "1x25"}],
        "alert_rule_test": [{
            "eval_time": "15m",
            "alertname": "UfmeServeProxyDown",
            "exp_alerts": [{
                "exp_labels": {"severity": "critical"},
                "exp_annotations": {
                    "summary": "No UFME-Ray pod can be scraped",
                    "description": "Prometheus has scraped no UFME-Ray Ray pod for 5 minutes.",
                },
            }],
        }],
    },
    {
        "name": "one pod of two up stays silent",
        "interval": "1m",
        "input_series": [
            {"series": 'up{job="ufme/ufme-ray", instance="10.0.0.1:8080"}', "values": "0x25"},
            {"series": 'up{job="ufme/ufme-ray", instance="10.0.0.2:8080"}', "values": "1x25"},
        ],
        "alert_rule_test": [{"eval_time": "20m", "alertname": "UfmeServeProxyDown", "exp_alerts": []}],
    },
    # ---- UfmeShardNotReady: a shard not restored for 5 minutes, per shard.
    {
        "name": "shard 1 not ready fires for shard 1 only",
        "interval": "1m",
        "input_series": [
            {"series": f'ray_ufme_shard_ready{{shard="0", {POD}}}', "values": "1x20"},
            {"series": f'ray_ufme_shard_ready{{shard="1", {POD}}}', "values": "1x2 0x18"},
        ],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "UfmeShardNotReady", "exp_alerts": []},
            {
                "eval_time": "15m",
                "alertname": "UfmeShardNotReady",
                "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "shard": "1"},
                    "exp_annotations": {
                        "summary": "Gallery shard 1 is not ready",
                        "description": "A shard actor has not restored its state for 5 minutes: identification answers 503.",
                    },
                }],
            },
        ],
    },
    {
        "name": "a restore shorter than 5 minutes stays silent",
        "interval": "1m",
        "input_series": [
            {"series": f'ray_ufme_shard_ready{{shard="0", {POD}}}', "values": "0x3 1x20"},
            {"series": f'ray_ufme_shard_ready{{shard="1", {POD}}}', "values": "1x23"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "UfmeShardNotReady", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "UfmeShardNotReady", "exp_alerts": []},
        ],
    },
    # ---- UfmeCompactionFailed: a failed compaction Job and no success within the last hour.
    # Test time starts at the epoch: kube_cronjob_status_last_successful_time's value is a
    # timestamp in the same clock as time() (0 = the first sample, 6000 = 100 minutes in).
    {
        "name": "a failed run after an old success fires",
        "interval": "1m",
        "input_series": [
            {"series": f'kube_job_status_failed{{{KSM}, job_name="ufme-compaction-29000001"}}', "values": "0x100 1x50"},
            {"series": f'kube_job_status_failed{{{KSM}, job_name="ufme-compaction-29000000"}}', "values": "0x150"},
            {"series": f'kube_job_status_failed{{{KSM}, job_name="other-job-1"}}', "values": "1x150"},
            {"series": f"kube_cronjob_status_last_successful_time{{{CRONJOB}}}", "values": "0x150"},
        ],
        "alert_rule_test": [{
            "eval_time": "110m",
            "alertname": "UfmeCompactionFailed",
            "exp_alerts": [{
                "exp_labels": {"severity": "warning", "job_name": "ufme-compaction-29000001"},
                "exp_annotations": {
                    "summary": "Compaction run ufme-compaction-29000001 failed",
                    "description": "A compaction Job failed after its retries and no compaction has succeeded since.",
                },
            }],
        }],
    },
    {
        "name": "a failed run with no success ever recorded fires",
        "interval": "1m",
        "input_series": [
            {"series": f'kube_job_status_failed{{{KSM}, job_name="ufme-compaction-29000001"}}', "values": "1x10"},
        ],
        "alert_rule_test": [{
            "eval_time": "5m",
            "alertname": "UfmeCompactionFailed",
            "exp_alerts": [{
                "exp_labels": {"severity": "warning", "job_name": "ufme-compaction-29000001"},
                "exp_annotations": {
                    "summary": "Compaction run ufme-compaction-29000001 failed",
                    "description": "A compaction Job failed after its retries and no compaction has succeeded since.",
                },
            }],
        }],
    },
    {
        "name": "a failed run followed by a success, other namespaces and other jobs stay silent",
        "interval": "1m",
        "input_series": [
            {"series": f'kube_job_status_failed{{{KSM}, job_name="ufme-compaction-29000001"}}', "values": "0x60 1x60"},
            {"series": f'kube_job_status_failed{{{KSM}, job_name="other-job-1"}}', "values": "1x120"},
            {"series": 'kube_job_status_failed{namespace="elsewhere", job_name="ufme-compaction-1"}', "values": "1x120"},
            # Succeeded 100 minutes in (after the failure at 60 minutes).
            {"series": f"kube_cronjob_status_last_successful_time{{{CRONJOB}}}", "values": "0x100 6000x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "50m", "alertname": "UfmeCompactionFailed", "exp_alerts": []},  # nothing failed yet
            {"eval_time": "110m", "alertname": "UfmeCompactionFailed", "exp_alerts": []},
        ],
    },
    # ---- UfmeCompactionStale: no success for over 2 hours (for 10 minutes).
    {
        "name": "no success for 3 hours fires",
        "interval": "1m",
        "input_series": [{"series": f"kube_cronjob_status_last_successful_time{{{CRONJOB}}}", "values": "0x200"}],
        "alert_rule_test": [
            {"eval_time": "125m", "alertname": "UfmeCompactionStale", "exp_alerts": []},  # over 2 h, still pending
            {
                "eval_time": "180m",
                "alertname": "UfmeCompactionStale",
                "exp_alerts": [{
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {
                        "summary": "No successful compaction for 3h 0m 0s",
                        "description": "Hourly compaction has not succeeded for over 2 hours: the exact delta index "
                        "grows and erased subjects stay in old snapshots.",
                    },
                }],
            },
        ],
    },
    {
        "name": "hourly successes stay silent",
        "interval": "1m",
        # The success timestamp moves forward every hour (0 s, 3600 s, 7200 s).
        "input_series": [{"series": f"kube_cronjob_status_last_successful_time{{{CRONJOB}}}", "values": "0x60 3600x60 7200x80"}],
        "alert_rule_test": [{"eval_time": "190m", "alertname": "UfmeCompactionStale", "exp_alerts": []}],
    },
    # ---- UfmeCompactionNeverSucceeded: no last-success series at all for 3 hours.
    {
        "name": "no success series for 3 hours fires",
        "interval": "1m",
        "input_series": [{"series": f'kube_job_status_failed{{{KSM}, job_name="other-job-1"}}', "values": "0x250"}],
        "alert_rule_test": [
            {"eval_time": "2h", "alertname": "UfmeCompactionNeverSucceeded", "exp_alerts": []},  # pending
            {
                "eval_time": "4h",
                "alertname": "UfmeCompactionNeverSucceeded",
                "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "ufme", "cronjob": "ufme-compaction"},
                    "exp_annotations": {
                        "summary": "Compaction has never succeeded",
                        "description": "The ufme-compaction CronJob has recorded no successful run for 3 hours "
                        "(or kube-state-metrics does not see it).",
                    },
                }],
            },
        ],
    },
    {
        "name": "a recorded success stays silent",
        "interval": "1m",
        "input_series": [{"series": f"kube_cronjob_status_last_successful_time{{{CRONJOB}}}", "values": "0x250"}],
        "alert_rule_test": [{"eval_time": "4h", "alertname": "UfmeCompactionNeverSucceeded", "exp_alerts": []}],
    },
]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (the Debian package; .ci/run installs it as root)")
    return found


def rule_groups(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = [m for m in manifests if m["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def alert_names(groups: list[dict[str, Any]]) -> set[str]:
    return {r["alert"] for g in groups for r in g["rules"] if "alert" in r}


def covered(cases: list[dict[str, Any]], *, firing: bool) -> set[str]:
    return {t["alertname"] for c in cases for t in c["alert_rule_test"] if bool(t["exp_alerts"]) == firing}


def test_every_alert_has_a_firing_and_a_silent_case(rendered):
    for env in ENVS:
        alerts = alert_names(rule_groups(rendered[env]))
        assert covered(CASES, firing=True) == alerts, f"{env}: alerts without (or with stale) firing cases"
        assert covered(CASES, firing=False) == alerts, f"{env}: alerts without (or with stale) silent cases"


@pytest.mark.parametrize("env", ENVS)
def test_alerts_fire_and_stay_silent_under_promtool(rendered, env, tmp_path: Path):
    binary = promtool()
    rules_file = tmp_path / "ufme-ray.rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule_groups(rendered[env])}, sort_keys=False))
    tests_file = tmp_path / "ufme-ray.tests.yaml"
    tests_file.write_text(yaml.safe_dump({
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [{k: v for k, v in case.items() if k != "name"} for case in CASES],
    }, sort_keys=False))
    result = subprocess.run([binary, "test", "rules", tests_file.name], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    names = "\n".join(f"  test #{i}: {c['name']}" for i, c in enumerate(CASES))
    assert result.returncode == 0, f"promtool test rules failed ({env}):\n{result.stdout}\n{result.stderr}\ncases:\n{names}"
