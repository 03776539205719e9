"""Approvers that hold: a run takes a gate decision only from a user who holds a deciding role in
its tenant when the decision arrives; anyone else is refused on the timeline and in the audit log."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError

from metabuilder.domain.access import Role
from metabuilder.domain.approvals import DecisionInput, GateView
from metabuilder.domain.payloads import RunView
from metabuilder.domain.runs import RunStatus
from metabuilder.store import access, approvals, repository
from metabuilder.store.db import transaction
from metabuilder.worker.settings import Settings
from tests.autofix.conftest import finish, start_autofix
from tests.autofix.test_gates import pending_gate
from tests.autofix.test_ladder import keep_histories

DEPLOY = "name: d\nsteps:\n  - name: deploy\n    command: echo deployed > deployed.txt\n    requires_approval: true\n"


def set_role(sessions, user: str, role: Role) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        access.create_token(session, "default", user, role)


async def test_only_a_current_admin_or_owner_decides(
        ts_workers: Client, settings: Settings, sessions, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    run = await start_autofix(ts_workers, settings, user_repo, DEPLOY)
    gate = await pending_gate(run.handle)

    with pytest.raises(WorkflowUpdateFailedError) as stranger:
        await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="mallory"),
                                        result_type=GateView)
    assert "no user 'mallory' in tenant 'default'" in str(stranger.value.cause)
    set_role(sessions, "vic", Role.VIEWER)
    with pytest.raises(WorkflowUpdateFailedError) as viewer:
        await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="vic"),
                                        result_type=GateView)
    assert "'vic' is viewer in tenant 'default'; deciding needs the admin or owner role" in str(viewer.value.cause)
    # A role taken away while the gate waits no longer decides; one given does.
    set_role(sessions, "ann", Role.OPERATOR)
    with pytest.raises(WorkflowUpdateFailedError) as demoted:
        await run.handle.execute_update("reject", DecisionInput(gate_id=gate.gate_id, by="ann", reason="no"),
                                        result_type=GateView)
    assert "'ann' is operator" in str(demoted.value.cause)
    await run.handle.signal("approve", DecisionInput(gate_id=gate.gate_id, by="ann"))  # dropped, recorded
    assert (await run.handle.query("status", result_type=RunView)).gates[0].pending
    set_role(sessions, "vic", Role.OWNER)
    decided = await run.handle.execute_update("approve", DecisionInput(gate_id=gate.gate_id, by="vic"),
                                              result_type=GateView)
    assert (decided.status, decided.decided_by) == ("approved", "vic")

    view = await finish(run.handle)
    assert view.status is RunStatus.SUCCEEDED, view.error
    refusals = [e.detail for e in view.timeline if e.strategy == "escalate" and e.outcome == "rejected"]
    assert len(refusals) == 4, refusals
    assert all(f"gate {gate.gate_id}" in r and "refused" in r for r in refusals)
    await keep_histories(ts_workers, "gate_approver_checked", view.run_id, 0)
    with transaction(sessions) as session:
        audit = [(a.event, a.data.get("detail", "")) for a in repository.audit_events(
            session, tenant="default", run_id=view.run_id)]
        assert [d for e, d in audit if e == "approval.refused"] == refusals
        assert approvals.get_gate(session, gate.gate_id).decided_by == "vic"
