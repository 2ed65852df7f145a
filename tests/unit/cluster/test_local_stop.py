"""`ufme-ray down` stops the processes of its own cluster's temp folder and nothing else; `up` refuses a taken port."""

import socket
import subprocess
import sys
import time

import psutil
import pytest

from ufme_ray.cluster import ClusterError, cluster_processes, start_local_head, stop_local_ray

# A parent that names the folder on its command line (like Ray's GCS, raylet, dashboard) and has a child.
PARENT = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"


def spawn(*arguments: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PARENT, *arguments])


def wait_for_children(process: subprocess.Popen) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = psutil.Process(process.pid).children()
        if children:
            return children
        time.sleep(0.05)
    raise AssertionError("the child process did not start")


def test_stops_the_folders_processes_and_their_children_only(tmp_path):
    folder = tmp_path / "ufme-ray"
    ours = [spawn(f"--temp-dir={folder}"), spawn(f"--log_dir={folder}/session_1/logs")]
    neighbours = [spawn(f"--temp-dir={folder}-other"), spawn(f"--temp-dir={tmp_path}")]
    try:
        children = [c for p in ours for c in wait_for_children(p)]
        neighbour_children = [c for p in neighbours for c in wait_for_children(p)]
        found = {p.pid for p in cluster_processes(folder)}
        assert found == {p.pid for p in ours} | {c.pid for c in children}

        assert stop_local_ray(folder, grace_s=5) == 4
        assert all(p.wait(timeout=10) is not None for p in ours)
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
        assert all(p.poll() is None for p in neighbours) and all(c.is_running() for c in neighbour_children)
    finally:
        for process in ours + neighbours:
            for child in psutil.Process(process.pid).children() if process.poll() is None else []:
                child.kill()
            process.kill()
            process.wait()


def test_a_taken_port_is_refused_before_ray_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} is in use.*--gcs-port"):
            start_local_head(num_cpus=1, gcs_port=port, dashboard_port=port + 1, metrics_port=0, agent_port=0)
