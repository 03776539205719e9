"""Approval gates on the time-skipping server: escalations and ``requires_approval`` steps pause
the run; Updates (validated) and Signals decide; an unattended gate expires to its default."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from metabuilder.domain.approvals import DecisionInput, GateView
from metabuilder.domain.payloads import RunView
from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.store import approvals, repository
from metabuilder.store.db import transaction
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import finish, start_autofix
from tests.autofix.test_ladder import keep_histories

SECURITY = """\
  - name: audit
    command: "echo 'Found 2 known vulnerabilities in 1 package'; echo 'requests 2.0.0 PYSEC-2023-74'; exit 1"
  - name: build
    command: echo built > built.txt
"""


async def pending_gate(handle: WorkflowHandle[object, RunView], number: int = 1) -> GateView:
    """Wait (in real time: queries do not skip time) until the run waits at its ``number``-th gate."""
    for _ in range(300):
        view = await handle.query("status", result_type=RunView)
        if len(view.gates) >= number and view.gates[number - 1].pending:
            assert view.status is RunStatus.PAUSED_AWAITING_APPROVAL
            return view.gates[number - 1]
        assert not view.status.is_final, f"the run ended {view.status} without a gate: {view.error}"
        await asyncio.sleep(0.1)
    raise AssertionError("no gate opened")


def update_events(history_events) -> list[str]:  # type: ignore[no-untyped-def]
    return [EventType.Name(e.event_type) for e in history_events if "UPDATE" in EventType.Name(e.event_type)]


async def test_security_finding_waits_for_approval_and_validator_refuses_bad_decisions(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    run = await start_autofix(ts_workers, settings, user_repo, f"name: sec\nsteps:\n{SECURITY}")
    gate = await pending_gate(run.handle)
    assert (gate.kind, gate.action, gate.signal_type, gate.step) == ("escalation", "override", "SECURITY", "audit")
    assert any("vulnerabilities" in e for e in gate.evidence)
    assert gate.deciders == ["admin", "owner"]

    with pytest.raises(WorkflowUpdateFailedError) as unknown:
        await run.handle.execute_update("approve", DecisionInput(gate_id="nope", by="ann"), result_type=GateView)
    assert "unknown gate 'nope'" in str(unknown.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as no_reason:
        await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="ann"),
                                        result_type=GateView)
    assert "needs a reason" in str(no_reason.value.cause)

    decided = await run.handle.execute_update(
        "approve", DecisionInput(gate_id=gate.gate_id, by="ann", reason="PYSEC-2023-74 is not reachable"),
        result_type=GateView)
    assert (decided.status, decided.decided_by) == ("approved", "ann")
    with pytest.raises(WorkflowUpdateFailedError) as twice:
        await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="bob", reason="no"),
                                        result_type=GateView)
    assert "already decided: approved by ann" in str(twice.value.cause)

    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert [s.status for s in view.steps] == [StepStatus.OVERRIDDEN, StepStatus.SUCCEEDED]
    await keep_histories(ts_workers, "gate_approved", view.run_id, 1)
    # Refused updates never entered the history: one update accepted and completed.
    events = update_events((await run.handle.fetch_history()).events)
    assert events == ["EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED", "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED"]
    with transaction(sessions) as session:
        [row] = approvals.list_gates(session, tenant="default", run_id=view.run_id)
        assert (row.status, row.decided_by) == ("approved", "ann")
        assert row.decision_reason == "PYSEC-2023-74 is not reachable"
        audit = [a.event for a in repository.audit_events(session, tenant="default", run_id=view.run_id)]
        assert "approval.requested" in audit and "approval.granted" in audit
        assert repository.get_run(session, view.run_id).status == "succeeded"


async def test_rejected_gate_fails_the_run_with_the_reason(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    run = await start_autofix(ts_workers, settings, user_repo, f"name: sec\nsteps:\n{SECURITY}")
    gate = await pending_gate(run.handle)
    with pytest.raises(WorkflowUpdateFailedError) as no_reason:
        await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann"), result_type=GateView)
    assert "a rejection needs a reason" in str(no_reason.value.cause)
    await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="fix it first"),
                                    result_type=GateView)
    view = await finish(run.handle)
    assert view.status is RunStatus.FAILED
    assert view.error == f"gate {gate.gate_id} rejected by ann: fix it first"
    await keep_histories(ts_workers, "gate_rejected", view.run_id, 0)
    assert view.steps[1].status is StepStatus.PENDING
    with transaction(sessions) as session:
        audit = [a for a in repository.audit_events(session, tenant="default", run_id=view.run_id)
                 if a.event == "approval.rejected"]
        assert [(a.actor, a.data["reason"]) for a in audit] == [("ann", "fix it first")]


async def test_unattended_gate_expires_to_reject_by_default(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    plan = f"name: sec\napprovals: {{timeout: 2h}}\nsteps:\n{SECURITY}"
    run = await start_autofix(ts_workers, settings, user_repo, plan)
    gate = await pending_gate(run.handle)
    view = await finish(run.handle)  # waiting on the result lets the test server skip the 2 hours
    assert view.status is RunStatus.FAILED
    await keep_histories(ts_workers, "gate_expired", view.run_id, 0)
    [expired] = view.gates
    assert (expired.status, expired.decided_by) == ("expired", "expiry")
    assert view.error.startswith(f"gate {gate.gate_id} expired: nobody decided before")
    with transaction(sessions) as session:
        events = [a.event for a in repository.audit_events(session, tenant="default", run_id=view.run_id)]
        assert "approval.expired" in events
        assert approvals.get_gate(session, gate.gate_id).status == "expired"


async def test_step_requiring_approval_runs_after_a_signal_or_an_approving_expiry(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    deploy = "  - name: deploy\n    command: echo deployed > deployed.txt\n    requires_approval: true\n"
    run = await start_autofix(ts_workers, settings, user_repo, f"name: d\nsteps:\n{deploy}")
    gate = await pending_gate(run.handle)
    assert (gate.kind, gate.action, gate.signal_type) == ("step_approval", "run_step", None)
    # An invalid signal (unknown gate) is dropped; a valid one decides.
    await run.handle.signal("approve", DecisionInput(gate_id="wrong", by="ops"))
    await run.handle.signal("approve", DecisionInput(gate_id=gate.gate_id, by="ops"))
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.gates[0].decided_by == "ops"
    await keep_histories(ts_workers, "gate_step_signalled", view.run_id, 0)

    plan = f"name: d\napprovals: {{timeout: 30m, on_expiry: approve}}\nsteps:\n{deploy}"
    run = await start_autofix(ts_workers, settings, user_repo, plan)
    await pending_gate(run.handle)
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.gates[0].status == "expired" and view.steps[0].status is StepStatus.SUCCEEDED


async def test_unknown_failure_is_rerun_when_approved(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "the-outside-world-is-fixed"
    step = f"  - name: odd\n    command: \"test -f {marker} || {{ echo 'something odd happened'; exit 3; }}\"\n"
    run = await start_autofix(ts_workers, settings, user_repo, f"name: odd\nsteps:\n{step}")
    gate = await pending_gate(run.handle)
    assert (gate.signal_type, gate.action) == ("UNKNOWN", "rerun")
    marker.touch()
    await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="ann"), result_type=GateView)
    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    assert view.steps[0].status is StepStatus.SUCCEEDED
