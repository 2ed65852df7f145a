"""The operator console is served by the API app: /console/ and its assets, under a strict
Content-Security-Policy, referring to nothing on another host (it must work on a closed network)."""

from __future__ import annotations

import re

import pytest

from ufme_ray.serving.api.console import CONSOLE_DIR, CONTENT_SECURITY_POLICY

ASSETS = sorted(p.relative_to(CONSOLE_DIR).as_posix() for p in CONSOLE_DIR.rglob("*") if p.is_file())


def test_the_console_ships_its_page_styles_and_every_screen():
    assert {"index.html", "console.css", "js/app.js", "js/api.js", "js/screens/enrol.js", "js/screens/audit.js"} <= set(ASSETS)


def test_console_redirects_to_the_page(service):
    client, _, _ = service
    answer = client.get("/console", follow_redirects=False)
    assert answer.status_code == 308 and answer.headers["location"] == "console/"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("asset", ["", *ASSETS])
def test_every_asset_is_served_with_the_policy(service, asset):
    client, _, _ = service
    answer = client.get(f"/console/{asset}")
    assert answer.status_code == 200
    assert answer.content == (CONSOLE_DIR / (asset or "index.html")).read_bytes()
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "'unsafe-inline'" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    if asset.endswith(".js"):
        assert answer.headers["content-type"].startswith("text/javascript")


def test_an_unknown_asset_is_a_json_404_with_the_policy(service):
    client, _, _ = service
    answer = client.get("/console/js/missing.js")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_api_carries_no_console_policy(service):
    client, _, _ = service
    assert "content-security-policy" not in client.get("/health").headers


@pytest.mark.parametrize("asset", ASSETS)
def test_no_asset_refers_to_another_host(asset):
    text = (CONSOLE_DIR / asset).read_text()
    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.IGNORECASE) == []


def test_the_page_runs_no_inline_script_or_style():
    page = (CONSOLE_DIR / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page and re.findall(r"<[^>]*\s(?:style|on[a-z]+)\s*=", page) == []
