"""A v4 run's priority and fairness keys, as Temporal records them: on the run's workflow, each
step's activity and the repair child (real dev server, in-process workers)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from metabuilder.domain.policy import effective_settings
from metabuilder.domain.runs import RunStatus, attempt_key
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.service.scheduling import resolve_v4
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import AUTOFIX
from tests.conftest import git
from tests.workflows.test_build_run import record_history

PLAN = """\
name: prioritised
priority: low
steps:
  - name: lint
    priority: high
    command: "if grep -n ' $' app.py; then echo 'app.py:1:13: W291 [*] Trailing whitespace'; exit 1; fi"
    fix: sed -i 's/ *$//' app.py
  - name: test
    command: 'true'
"""


async def test_priority_and_fairness_keys_reach_the_workflow_its_steps_and_repair_child(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, workers, user_repo: Path) -> None:
    (user_repo / "app.py").write_text("print('app')   \n")
    v4 = resolve_v4(settings.v4, sessions, "default", run_enabled=True)
    # Room in the budget for a lost attempt or two on a loaded machine, before the patch.
    roomy = replace(AUTOFIX, max_total_attempts=12, max_per_step_attempts=8)
    opts = SubmitOptions.of(settings, autofix=effective_settings(roomy), v4=v4)
    run = await submit(client, PLAN, "plan.yaml", user_repo, opts)
    view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    history = await run.handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.priority
    assert (started.priority_key, started.fairness_key, started.fairness_weight) == (5, "default", 1.0)
    scheduled = [(e.activity_task_scheduled_event_attributes.activity_id,
                  e.activity_task_scheduled_event_attributes.priority.priority_key) for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert [key for _, key in scheduled if "lint" in _] and all(k == 1 for a, k in scheduled if "lint" in a)
    assert [k for a, k in scheduled if "test" in a] == [5]
    [child] = [e.start_child_workflow_execution_initiated_event_attributes for e in history.events
               if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED]
    assert (child.priority.priority_key, child.priority.fairness_key) == (1, "default")
    repair = client.get_workflow_handle(child.workflow_id)
    record_history("v4_priority", history.to_json())
    record_history("v4_priority_repair_1", (await repair.fetch_history()).to_json())


async def test_each_step_attempt_has_an_idempotency_key_in_its_row_and_its_command(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, workers, user_repo: Path) -> None:
    plan = ("name: keys\nsteps:\n  - name: a\n    command: echo \"$METABUILDER_ATTEMPT_KEY\" > key-a.txt\n"
            "  - name: b\n    command: echo \"$METABUILDER_ATTEMPT_KEY\" > key-b.txt\n")
    run = await submit(client, plan, "plan.yaml", user_repo, SubmitOptions.of(settings))
    view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    shared = Path(settings.shared_repo)
    for index, name in enumerate("ab"):
        key = attempt_key(run.run_id, index, 1)
        assert key == f"{run.run_id}/{index:03d}/1"
        assert git(shared, "show", f"{view.head_commit}:key-{name}.txt") == key
    with transaction(sessions) as session:
        assert [r.idempotency_key for r in repository.run_steps(session, run.run_id)] == [
            attempt_key(run.run_id, 0, 1), attempt_key(run.run_id, 1, 1)]
