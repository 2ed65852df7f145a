"""Each way a setting comes in reaches the replica that uses it (docs/SETTINGS.md): a settings file
rendered the way `ufme-ray up --config` renders it, the UFME_CONFIG file and UFME_* variables of the
process that builds the app, and the Gateway's user_config; a user_config that leaves a field out
keeps the settings' value instead of reverting it to the default. One redeploy with other args
(replicas restart), two user_config changes (no restart), then the session's own config again."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from ufme_ray.cluster.provision import render_for_up
from ufme_ray.config import UfmeSettings

pytestmark = pytest.mark.ray

ENV_DETECTION_MIN = 0.55  # manifest default for YuNet: 0.6
FILE_MAX_BYTES = 2_000_000  # default: 10 MB


def enrol(service, subject: str, photo: bytes):
    return service.http.post(f"/api/v1/subjects/{subject}/faces", files={"image": ("p.jpg", photo, "image/jpeg")})


def analyze(service, photo: bytes) -> dict:
    response = service.http.post("/api/v1/analyze", files={"image": ("p.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def deploy_user_config(service, config: dict, user_config: dict) -> None:
    """`config` again with only the Gateway's user_config changed: Serve reconfigures, no restart."""
    config = copy.deepcopy(config)
    next(d for d in config["applications"][0]["deployments"] if d["name"] == "Gateway")["user_config"] = user_config
    service.dashboard.deploy(config)


def poll(check, what: str, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # noqa: BLE001 - a replica being replaced answers oddly for a moment
            pass
        assert time.monotonic() < deadline, f"{what} did not take effect"
        time.sleep(0.5)


def test_every_way_in_reaches_the_replicas(service, faces_dir: Path, tmp_path: Path):
    photo = (faces_dir / "pad/live/silentface_image_T1.jpg").read_bytes()
    default_detection_min = analyze(service, photo)["thresholds"]["detection_min"]
    assert default_detection_min != ENV_DETECTION_MIN

    # 1. A settings file as `up --config` takes it: duplicates (in no user_config of the profile)
    # and the enrolment gates (pinned by the profile's user_config: the file's value must win).
    up_file = tmp_path / "up.yaml"
    up_file.write_text("duplicates: {action: warn}\ngates: {enrol: []}\n")
    profile = tmp_path / "serve_config.yaml"
    profile.write_text(yaml.safe_dump(service.base_config))
    config = render_for_up(profile, UfmeSettings.load(up_file).explicit_values())
    # 2. The UFME_CONFIG file and a UFME_* variable of the process that builds the app (build_app).
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(f"image: {{max_bytes: {FILE_MAX_BYTES}}}\n")
    app = config["applications"][0]
    app["runtime_env"] = {"env_vars": {
        "UFME_CONFIG": str(cluster_file), "UFME_THRESHOLDS__DETECTION_MIN": str(ENV_DETECTION_MIN),
    }}
    gateway = next(d for d in app["deployments"] if d["name"] == "Gateway")
    deployed_user_config = copy.deepcopy(gateway["user_config"])
    assert "duplicates" in deployed_user_config and "detection_min" not in deployed_user_config["thresholds"]
    subjects = ["reach-a", "reach-b", "reach-c", "reach-d"]
    try:
        service.dashboard.deploy(config)
        answer = poll(lambda: (a := analyze(service, photo))["thresholds"]["detection_min"] == ENV_DETECTION_MIN and a,
                      "UFME_THRESHOLDS__DETECTION_MIN")
        assert answer["faces"], "no face in the probe photo"
        # UFME_CONFIG on the cluster: the Gateway refuses an upload over the file's limit (413), not
        # the default's (a 3 MB non-image would be a 400).
        poll(lambda: service.http.post("/api/v1/analyze", files={"image": ("x.jpg", b"\0" * 3_000_000, "image/jpeg")})
             .status_code == 413, "UFME_CONFIG image.max_bytes")
        # The file through `up`: no gate for enrolment, and a duplicate enrols with a warning.
        first = enrol(service, "reach-a", photo)
        assert first.status_code == 201, first.text
        second = enrol(service, "reach-b", photo)
        assert second.status_code == 201, second.text
        assert second.json()["duplicate_of"]["subject_id"] == "reach-a"

        # 3. user_config, live: reject.
        deploy_user_config(service, config, {**deployed_user_config, "duplicates": {"action": "reject"}})
        clash = poll(lambda: (r := enrol(service, "reach-c", photo)).status_code == 409 and r, "user_config reject")
        assert clash.json()["error"]["code"] == "duplicate_face"
        # A user_config without duplicates: back to the settings' warn, not the default reject.
        deploy_user_config(service, config, {k: v for k, v in deployed_user_config.items() if k != "duplicates"})
        warned = poll(lambda: (r := enrol(service, "reach-d", photo)).status_code == 201 and r, "settings' duplicates")
        assert warned.json()["duplicate_of"] is not None
        assert analyze(service, photo)["thresholds"]["detection_min"] == ENV_DETECTION_MIN  # not reverted either
    finally:
        for subject in subjects:
            service.http.delete(f"/api/v1/subjects/{subject}")
        service.deploy()
        poll(lambda: analyze(service, photo)["thresholds"]["detection_min"] == default_detection_min,
             "the session's config", timeout_s=180)
        service.wait_ready()
