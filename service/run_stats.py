"""A tenant's run statistics over a window, read from the DB projection (:mod:`domain.run_stats`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.domain.run_stats import AutofixFact, CostFact, FailureFact, RunFact, RunStats, run_stats
from metabuilder.domain.runs import AttemptStatus
from metabuilder.store.models import AutoFixRun, BuildRun, BuildStep, RepairAttempt, ScaffoldPlan

MAX_WINDOW = timedelta(days=90)


def tenant_run_stats(session: Session, tenant: str | None, window: timedelta,
                     now: datetime | None = None) -> RunStats:
    """Runs started within ``window`` before ``now`` (of ``tenant``; None: every tenant's)."""
    until = now or datetime.now(UTC)
    since = until - window

    def of_tenant(stmt):  # type: ignore[no-untyped-def]
        return stmt if tenant is None else stmt.where(BuildRun.tenant_id == tenant)

    runs = [RunFact(*r) for r in session.execute(of_tenant(
        select(BuildRun.id, BuildRun.status, BuildRun.created_at, BuildRun.finished_at)
        .where(BuildRun.created_at >= since)))]
    attempts = session.execute(of_tenant(
        select(BuildStep.run_id, BuildStep.name, BuildStep.status, BuildStep.signal_type, BuildStep.finished_at)
        .join(BuildRun, BuildRun.id == BuildStep.run_id)
        .where(BuildRun.created_at >= since, BuildStep.finished_at.is_not(None)))).all()
    failures = [FailureFact(a.signal_type, a.finished_at) for a in attempts
                if a.signal_type and a.status == AttemptStatus.FAILED]
    passed: dict[tuple[str, str], datetime] = {}
    ok = (AttemptStatus.SUCCEEDED, AttemptStatus.ADOPTED)
    for a in sorted((a for a in attempts if a.status in ok), key=lambda a: a.finished_at):
        passed.setdefault((a.run_id, a.name), a.finished_at)
    autofix = [AutofixFact(*e) for e in session.execute(of_tenant(
        select(AutoFixRun.run_id, AutoFixRun.step_name, AutoFixRun.strategy, AutoFixRun.outcome,
               AutoFixRun.signal_type, AutoFixRun.created_at)
        .join(BuildRun, BuildRun.id == AutoFixRun.run_id).where(BuildRun.created_at >= since)
        .order_by(AutoFixRun.run_id, AutoFixRun.seq)))]
    costs = [CostFact(t, p, c or 0.0, (i or 0) + (o or 0)) for t, p, c, i, o in session.execute(of_tenant(
        select(BuildRun.tenant_id, ScaffoldPlan.name, RepairAttempt.cost_usd, RepairAttempt.tokens_in,
               RepairAttempt.tokens_out)
        .join(BuildRun, BuildRun.id == RepairAttempt.run_id).join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
        .where(BuildRun.created_at >= since)))]
    return run_stats(since, until, runs, failures, autofix, costs, passed)
