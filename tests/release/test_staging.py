"""The staging seed script and the smoke tests, against a real `metabuilder up`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from metabuilder.worker.devserver import free_port

ROOT = Path(__file__).resolve().parents[2]
METABUILDER = Path(sys.executable).parent / "metabuilder"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`metabuilder up` on free ports; yields its API URL and the environment its CLI needs."""
    dev_port, api_port = free_port(), free_port()
    env = {**os.environ, "META_BUILDER_HOME": str(tmp_path / "home"), "META_BUILDER_ENV": "staging",
           "META_BUILDER_DEV_SERVER_PORT": str(dev_port), "META_BUILDER_DEV_SERVER_UI_PORT": str(free_port()),
           "META_BUILDER_API_PORT": str(api_port), "META_BUILDER_SDK_METRICS_PORT": "0",
           "META_BUILDER_METRICS_PORT": "0", "META_BUILDER_WORKSPACE_ROOTS": str(tmp_path),
           "META_BUILDER_LOG_LEVEL": "warning", "HOME": str(tmp_path)}
    env.pop("TEMPORAL_ADDRESS", None)
    env.pop("DATABASE_URL", None)
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([str(METABUILDER), "up"], env=env, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    url = f"http://127.0.0.1:{api_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.3)
        yield url, env
    finally:
        os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()


def test_seed_script_and_smoke_tests_against_metabuilder_up(deployment: tuple[str, dict[str, str]],
                                                            tmp_path: Path) -> None:
    url, env = deployment
    seed = subprocess.run(["bash", "scripts/seed_staging_v3.sh", url], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**env, "METABUILDER": str(METABUILDER),
                                            "STAGING_WORKSPACES": str(tmp_path / "staging")})
    assert seed.returncode == 0, seed.stdout + seed.stderr
    out = seed.stdout
    tenant = re.search(r"Tenant ID: (\S+)", out).group(1)
    run_id = re.search(r"Run ID:\s+(\S+)", out).group(1)
    assert re.search(r"Plan ID:\s+\S+", out)
    assert f"{url}/portal/runs/{run_id}" in out and f"/api/meta/v2/runs/{run_id}/autofix" in out
    exports = dict(re.findall(r"(SMOKE_\w+)=(\S+)", out.split("export", 1)[1]))
    assert set(exports) == {"SMOKE_BASE_URL", "SMOKE_TOKEN", "SMOKE_WORKSPACE"}

    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {exports['SMOKE_TOKEN']}"}, timeout=10)
    assert api.get("/api/meta/v3/me").json()["tenant"] == tenant
    settings = api.get(f"/api/meta/v3/tenants/{tenant}/settings").json()
    assert settings["overrides"] == {"autofix_enabled": True}, settings
    deadline = time.monotonic() + 120
    while (status := api.get(f"/api/meta/v3/runs/{run_id}").json().get("status", "pending")) in ("pending",
                                                                                                "running"):
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    assert status == "succeeded"  # the seeded run's known problem was healed

    smoke = subprocess.run([sys.executable, "-m", "pytest", "tests/smoke", "-q", "-p", "no:cacheprovider"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "RUN_SMOKE": "true", **exports})
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "3 passed" in smoke.stdout


def test_smoke_tests_are_skipped_with_a_reason_unless_asked_for() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_SMOKE", "SMOKE_BASE_URL")}
    result = subprocess.run([sys.executable, "-m", "pytest", "tests/smoke", "-q", "-rs", "-p", "no:cacheprovider"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout
    assert "3 skipped" in result.stdout and "set RUN_SMOKE=true and SMOKE_BASE_URL" in result.stdout
