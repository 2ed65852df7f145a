"""Fixtures of the unit tests that talk HTTP to a stand-in (tests/unit/fake_http.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.fake_http import FakeServer, serve


@pytest.fixture
def fake_dashboard() -> Iterator[FakeServer]:
    """Stands in for the Ray dashboard's REST API (jobs, Serve applications)."""
    yield from serve("fake-ray-dashboard")
