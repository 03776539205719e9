"""Per-class retries through Temporal's own retry machinery, on the time-skipping server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.converter import DataConverter, value_to_type

from metabuilder.domain.payloads import StepResult
from metabuilder.domain.runs import RunStatus
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import finish, start_autofix
from tests.workflows.test_build_run import record_history


async def step_activity_in_history(handle: WorkflowHandle[Any, Any], activity_id: str) -> tuple[float, StepResult]:
    """From the workflow history: seconds from scheduling the step's activity to the start of its
    last attempt (the sum of the retry delays the server applied), and the activity's result."""
    events = (await handle.fetch_history()).events
    scheduled = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                     and e.activity_task_scheduled_event_attributes.activity_id == activity_id)
    started = next(e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                   and e.activity_task_started_event_attributes.scheduled_event_id == scheduled.event_id)
    done = next(e for e in events if e.activity_task_completed_event_attributes.scheduled_event_id == scheduled.event_id
                or e.activity_task_failed_event_attributes.scheduled_event_id == scheduled.event_id)
    if done.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
        payload = done.activity_task_completed_event_attributes.result.payloads[0]
        result = DataConverter.default.payload_converter.from_payload(payload, StepResult)
    else:
        details = done.activity_task_failed_event_attributes.failure.application_failure_info.details.payloads[0]
        result = value_to_type(StepResult, DataConverter.default.payload_converter.from_payload(details))
    waited = (started.event_time.ToDatetime() - scheduled.event_time.ToDatetime()).total_seconds()
    return waited, result


def flaky_command(counter: Path, fails: int, message: str) -> str:
    """Fails ``fails`` times with ``message`` on stderr (counting in a file outside the checkout)."""
    return (f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; "
            f"if [ $n -lt {fails} ]; then echo '{message}' >&2; exit 1; fi; echo ok")


async def test_transient_failure_is_retried_with_class_backoff(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cmd = flaky_command(tmp_path / "n", 2, "curl: (56) Recv failure: Connection reset by peer")
    run = await start_autofix(ts_workers, settings, user_repo,
                              f"name: t\nsteps:\n  - name: fetch\n    command: \"{cmd}\"\n")
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    retries = [e for e in view.timeline if e.strategy == "retry"]
    assert [(e.signal_type, e.backoff_seconds) for e in retries] == [("TRANSIENT", 1.0), ("TRANSIENT", 2.0)]
    assert view.retry_state is not None and view.retry_state.total_attempts == 2

    waited, result = await step_activity_in_history(run.handle, "000-fetch")
    assert result.attempt == 3 and result.temporal_attempts == 3
    assert [r.backoff_seconds for r in result.retries] == [1.0, 2.0]
    assert 3.0 <= waited < 10.0, waited  # the server really waited 1 s then 2 s between attempts
    record_history("autofix_retried", (await run.handle.fetch_history()).to_json())
    with transaction(sessions) as session:
        rows = repository.step_attempts(session, view.run_id, 0, 1, 9)
        assert [(r.status, r.signal_type, r.backoff_seconds) for r in rows] == [
            ("failed", "TRANSIENT", 1.0), ("failed", "TRANSIENT", 2.0), ("succeeded", None, None)]
        events = [a.event for a in repository.audit_events(session, tenant="default", run_id=view.run_id)]
        assert events == ["autofix.retry", "autofix.retry"]
        state = repository.retry_state(session, view.run_id)
        assert state is not None and state.total_attempts == 2 and state.per_step_attempts == {"fetch": 2}


async def test_rate_limit_waits_what_retry_after_asks_even_above_the_cap(
        ts_workers: Client, settings: Settings, user_repo: Path, tmp_path: Path) -> None:
    cmd = flaky_command(tmp_path / "n", 1, "HTTP/1.1 429 Too Many Requests\nRetry-After: 90")
    run = await start_autofix(ts_workers, settings, user_repo,
                              f"name: t\nsteps:\n  - name: publish\n    command: \"{cmd}\"\n")
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    [retry] = [e for e in view.timeline if e.strategy == "retry"]
    assert (retry.signal_type, retry.backoff_seconds) == ("RATE_LIMIT", 90.0)
    waited, result = await step_activity_in_history(run.handle, "000-publish")
    assert result.retries[0].retry_after == 90.0
    assert 90.0 <= waited < 100.0, waited
