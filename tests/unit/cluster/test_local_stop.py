"""`ufme-ray down` stops the processes of its own cluster's temp folder and nothing else; `up` refuses a taken port."""

import socket
import subprocess
import sys
import time

import psutil
import pytest

from ufme_ray.cluster import RAY_ADDRESS_FILE, ClusterError, cluster_processes, start_local_head, stop_local_ray

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


def test_a_heads_ray_client_server_is_its_own_and_no_worker_nodes(tmp_path):
    """The Ray Client server names only the GCS address, which the folders of the head and of a
    worker node on the same machine both hold: it is stopped with the head."""
    gcs_server = tmp_path / "gcs_server"  # what the head's GCS process is called
    gcs_server.symlink_to(sys.executable)
    head, worker = tmp_path / "head", tmp_path / "worker"
    for folder in (head, worker):
        folder.mkdir()
        (folder / RAY_ADDRESS_FILE).write_text("10.0.0.7:6379\n")
    started = [
        subprocess.Popen([str(gcs_server), "-c", "import time; time.sleep(120)", f"--log_dir={head}/session_1/logs"]),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", f"--temp-dir={worker}"]),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "ray.util.client.server",
                          "--address=10.0.0.7:6379"]),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "ray.util.client.server",
                          "--address=10.0.0.8:6379"]),  # another cluster's
    ]
    try:
        deadline = time.monotonic() + 10
        while not all(psutil.Process(p.pid).cmdline()[-1:] == [p.args[-1]] for p in started):  # exec'd
            assert time.monotonic() < deadline, "the processes did not start"
            time.sleep(0.05)
        gcs, raylet, client_server, other = (p.pid for p in started)
        assert {p.pid for p in cluster_processes(head)} == {gcs, client_server}
        assert {p.pid for p in cluster_processes(worker)} == {raylet}
    finally:
        for process in started:
            process.kill()
            process.wait()


def test_a_taken_port_is_refused_before_ray_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ClusterError, match=f"port {port} is in use.*--gcs-port"):
            start_local_head(num_cpus=1, gcs_port=port, dashboard_port=port + 1, metrics_port=0, agent_port=0)
