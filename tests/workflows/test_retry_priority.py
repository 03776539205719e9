"""A retry keeps the priority given for the run (``--priority``), unless it gives its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from metabuilder.domain.pools import PriorityClass
from metabuilder.service.runs import SubmitOptions, prepare_retry, submit
from metabuilder.service.scheduling import resolve_v4
from metabuilder.worker.settings import Settings

PLAN = "name: retried\nsteps:\n  - name: check\n    command: exit 3\n"


async def test_a_retry_keeps_the_runs_own_priority(client: Client, settings: Settings, sessions, user_repo: Path,  # type: ignore[no-untyped-def]
                                                   workers) -> None:
    low = resolve_v4(settings.v4, sessions, "default", run_enabled=True, priority=PriorityClass.LOW)
    run = await submit(client, PLAN, "plan.yaml", user_repo, SubmitOptions.of(settings, v4=low))
    with pytest.raises(WorkflowFailureError):
        await run.handle.result()
    plain = SubmitOptions.of(settings, v4=resolve_v4(settings.v4, sessions, "default", run_enabled=True))
    kept = await prepare_retry(sessions, run.run_id, plain, settings.autofix)
    assert kept.scheduling is not None
    assert (kept.scheduling.priority, kept.scheduling.override) == (PriorityClass.LOW, True)
    high = SubmitOptions.of(settings, v4=resolve_v4(settings.v4, sessions, "default", run_enabled=True,
                                                    priority=PriorityClass.HIGH))
    own = await prepare_retry(sessions, run.run_id, high, settings.autofix)
    assert own.scheduling is not None and own.scheduling.priority is PriorityClass.HIGH
