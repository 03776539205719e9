"""Smoke tests run against a running deployment, only when asked for.

    RUN_SMOKE=true SMOKE_BASE_URL=http://127.0.0.1:5001 SMOKE_TOKEN=... SMOKE_WORKSPACE=/path make smoke

SMOKE_TOKEN is an admin token of the tenant to test in; SMOKE_WORKSPACE a git working tree on the
API's host, inside its META_BUILDER_WORKSPACE_ROOTS (scripts/seed_staging_v3.sh prints all three).
"""

from __future__ import annotations

import os

import httpx
import pytest

ENABLED = os.environ.get("RUN_SMOKE", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="smoke tests run against a deployment: set RUN_SMOKE=true and SMOKE_BASE_URL")
    for item in items:
        if "tests/smoke/" in item.nodeid:
            item.add_marker(skip)


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        pytest.fail(f"{name} is not set; the smoke tests need it (see tests/smoke/conftest.py)", pytrace=False)
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _required("SMOKE_BASE_URL").rstrip("/")


@pytest.fixture(scope="session")
def api(base_url: str) -> httpx.Client:
    token = _required("SMOKE_TOKEN")
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)


@pytest.fixture(scope="session")
def workspace() -> str:
    return _required("SMOKE_WORKSPACE")
