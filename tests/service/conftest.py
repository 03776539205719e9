"""Rows of two tenants' runs in a real (SQLite, migrated) projection, for the use cases to read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.approvals import GateView
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.store import approvals, plans, runs, steps
from metabuilder.store.db import transaction

PLAN = "name: svc\nsteps:\n  - {name: build, command: 'true'}\n"


def record(session: Session, run_id: str, tenant: str, status: RunStatus) -> None:
    runs.record_run(session, RunRecord(
        run_id=run_id, tenant=tenant, status=status, plan=parse_plan(PLAN), plan_source=PLAN,
        workflow_id=f"build-run-{run_id}", repo_url="/nowhere.git", branch="b", base_commit="a" * 40,
        head_commit="a" * 40))


@pytest.fixture
def seeded(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    """acme's run ``acme-1`` (running, one attempt, one gate) and ``acme-done`` (succeeded), a plan
    of acme's, and globex's run ``globex-1``."""
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        record(session, "acme-1", "acme", RunStatus.RUNNING)
        record(session, "acme-done", "acme", RunStatus.SUCCEEDED)
        record(session, "globex-1", "globex", RunStatus.RUNNING)
        steps.step_started(session, steps.StepAttempt(run_id="acme-1", step_index=0, attempt=1, name="build",
                                                      queue="cpu", command="true", commit_before="a" * 40, worker="w"))
        approvals.record_gate(session, "acme", GateView(
            gate_id="acme-1-gate-1", run_id="acme-1", step="build", kind="escalation", action="rerun",
            reason="seeded", opened_at=now, expires_at=now + timedelta(hours=1)))
        plans.ensure_plan_of(session, "acme", parse_plan(PLAN), PLAN)
    return sessions
