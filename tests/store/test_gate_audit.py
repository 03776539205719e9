"""A gate decision is audited once: the run's own record and the API's request tie are one row,
whichever of them is written first."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.approvals import GateAction, GateKind, GateStatus, GateView
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.store import approvals, repository
from metabuilder.store.audit import audit_events
from metabuilder.store.db import transaction

NOW = datetime(2026, 12, 3, 7, tzinfo=UTC)
PLAN = "name: shipped\nsteps:\n  - name: deploy\n    command: 'true'\n    requires_approval: true\n"


def gate(run_id: str) -> GateView:
    return GateView(gate_id=f"{run_id}-gate-1", run_id=run_id, step="deploy", kind=GateKind.STEP_APPROVAL,
                    action=GateAction.RUN_STEP, reason="deploy needs approval", opened_at=NOW,
                    expires_at=NOW + timedelta(hours=1))


@pytest.mark.parametrize("api_first", [True, False])
def test_a_decision_is_audited_once_with_its_request(sessions: sessionmaker[Session], api_first: bool) -> None:
    pending = gate(f"run-{api_first}")
    decided = replace(pending, status=GateStatus.APPROVED, decided_by="admin-user", decided_at=NOW,
                      decision_reason="ok")
    with transaction(sessions) as s:
        repository.record_run(s, RunRecord(
            run_id=pending.run_id, tenant="acme", status=RunStatus.PAUSED_AWAITING_APPROVAL, plan=parse_plan(PLAN),
            plan_source=PLAN, workflow_id=f"build-run-{pending.run_id}", repo_url="/nowhere.git", branch="b",
            base_commit="a" * 40, head_commit="a" * 40))
    with transaction(sessions) as s:
        assert approvals.record_gate(s, "acme", pending) is True
        assert approvals.record_gate(s, "acme", pending) is False
    writes = [lambda s: approvals.record_decision_request(s, "acme", decided, "req-1"),
              lambda s: approvals.record_gate(s, "acme", decided)]
    new_states = []
    for write in (writes if api_first else writes[::-1]):
        with transaction(sessions) as s:
            new_states.append(write(s))
    with transaction(sessions) as s:
        assert approvals.record_gate(s, "acme", decided) is False
        events = [(e.event, e.actor, e.request_id, e.target, e.before, e.after)
                  for e in audit_events(s, tenant="acme", run_id=pending.run_id)]
    assert new_states == ([None, True] if api_first else [True, None])
    assert events == [
        ("approval.requested", "metabuilder", None, f"gate:{pending.gate_id}", None, {"status": "pending"}),
        ("approval.granted", "admin-user", "req-1", f"gate:{pending.gate_id}", {"status": "pending"},
         {"status": "approved", "reason": "ok"}),
    ]
