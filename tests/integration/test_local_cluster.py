"""A local cluster as `ufme-ray up` starts it: every process that serves it lies under its temp
folder, where `ufme-ray down` finds and stops it."""

from __future__ import annotations

import psutil

from ufme_ray import cluster


def test_every_process_of_the_cluster_is_found_by_its_temp_folder(ray_session):
    gcs_address_suffix = f":{ray_session['gcs_port']}"
    serving = []
    for process in psutil.process_iter(["cmdline"]):
        arguments = process.info["cmdline"] or []
        if any(argument.endswith(gcs_address_suffix) for argument in arguments):
            serving.append(process)
    found = {process.pid for process in cluster.cluster_processes(ray_session["temp_dir"])}
    assert serving, "no process names the cluster's GCS address"
    assert [p.info["cmdline"][:3] for p in serving if p.pid not in found] == []
