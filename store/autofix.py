"""Auto-fix: the timeline of what the ladder did, repair attempts, plan deltas, retry state,
and the counts read from them (outcomes, flake rates)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from metabuilder.domain.payloads import AutofixEvent, AutofixRecord
from metabuilder.domain.plans import step_to_dict
from metabuilder.store.models import (
    AuditEvent,
    AutoFixRun,
    BuildRun,
    BuildStep,
    PlanDeltaRow,
    RepairAttempt,
    RetryStateRow,
    ScaffoldPlan,
    utcnow,
)
from metabuilder.store.plans import ensure_plan_of
from metabuilder.store.rows import stable_id, upsert
from metabuilder.store.tenants import ensure_tenant


def record_autofix(session: Session, record: AutofixRecord) -> list[AutofixEvent]:
    """Write timeline entries, their audit events, the retry state and a plan delta. Idempotent:
    rows are keyed by the run and the workflow's sequence numbers. Returns the entries that were
    not there before (none when the same record is written again)."""
    now = utcnow()
    ensure_tenant(session, record.tenant)
    seqs = [ev.seq for ev in record.events]
    known = set(session.scalars(select(AutoFixRun.seq).where(AutoFixRun.run_id == record.run_id,
                                                             AutoFixRun.seq.in_(seqs)))) if seqs else set()
    for ev in record.events:
        upsert(session, AutoFixRun,
                {"id": stable_id(record.run_id, "autofix", ev.seq), "run_id": record.run_id, "seq": ev.seq,
                 "step_name": ev.step, "signal_type": ev.signal_type, "confidence": ev.confidence,
                 "strategy": ev.strategy, "outcome": ev.outcome, "attempt": ev.attempt, "backoff": ev.backoff_seconds,
                 "detail": ev.detail, "commit": ev.commit, "fingerprint": ev.fingerprint,
                 "evidence": list(ev.evidence), "created_at": now, "updated_at": now},
                keys=["run_id", "seq"], update=["outcome", "detail", "commit", "updated_at"])
        if ev.audit:
            upsert(session, AuditEvent,
                    {"id": stable_id(record.run_id, "audit", ev.seq), "tenant_id": record.tenant,
                     "run_id": record.run_id, "event": ev.audit, "actor": "metabuilder",
                     "data": {"step": ev.step, "signal_type": ev.signal_type, "strategy": ev.strategy,
                              "outcome": ev.outcome, "attempt": ev.attempt, "detail": ev.detail},
                     "created_at": now},
                    keys=["id"], update=[])
    if (state := record.retry_state) is not None:
        upsert(session, RetryStateRow,
                {"id": stable_id(record.run_id, "retry-state"), "run_id": record.run_id,
                 "attempt_counter": state.attempt_counter, "per_step_attempts": dict(state.per_step_attempts),
                 "total_attempts": state.total_attempts, "last_backoff_seconds": state.last_backoff_seconds,
                 "max_total_attempts": state.max_total_attempts,
                 "max_per_step_attempts": state.max_per_step_attempts, "created_at": now, "updated_at": now},
                keys=["run_id"],
                update=["attempt_counter", "per_step_attempts", "total_attempts", "last_backoff_seconds",
                        "max_total_attempts", "max_per_step_attempts", "updated_at"])
    if record.delta is not None and record.plan_before is not None and record.plan_after is not None:
        delta = record.delta
        data = {"kind": delta.kind.value, "step": delta.step, "reason": delta.reason,
                "new_step": step_to_dict(delta.new_step) if delta.new_step else None,
                "command": delta.command}
        upsert(session, PlanDeltaRow,
                {"id": stable_id(record.run_id, "delta", record.delta_seq), "run_id": record.run_id,
                 "original_plan_id": ensure_plan_of(session, record.tenant, record.plan_before),
                 "new_plan_id": ensure_plan_of(session, record.tenant, record.plan_after),
                 "delta_data": data, "triggered_by": delta.triggered_by[:100], "created_at": now},
                keys=["id"], update=[])
    return [ev for ev in record.events if ev.seq not in known]


@dataclass(frozen=True)
class RepairRecord:
    run_id: str
    seq: int
    step_index: int
    step_name: str
    signal_type: str
    fixer: str
    outcome: str
    reason: str
    diff: str
    files: list[str]
    commit_before: str
    commit_after: str | None
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def record_repair_attempt(session: Session, r: RepairRecord) -> None:
    upsert(session, RepairAttempt, {"id": stable_id(r.run_id, "repair", r.seq), **vars(r), "created_at": utcnow()},
            keys=["run_id", "seq"], update=["outcome", "reason", "commit_after", "files"])


def autofix_timeline(session: Session, run_id: str) -> list[AutoFixRun]:
    return list(session.scalars(select(AutoFixRun).where(AutoFixRun.run_id == run_id).order_by(AutoFixRun.seq)))


def repair_attempts(session: Session, run_id: str) -> list[RepairAttempt]:
    return list(session.scalars(select(RepairAttempt).where(RepairAttempt.run_id == run_id)
                                .order_by(RepairAttempt.seq)))


def plan_deltas(session: Session, run_id: str) -> list[PlanDeltaRow]:
    return list(session.scalars(select(PlanDeltaRow).where(PlanDeltaRow.run_id == run_id)
                                .order_by(PlanDeltaRow.created_at)))


def has_autofix(session: Session, run_id: str) -> bool:
    """Whether auto-fix acted in the run (at least one timeline entry)."""
    return session.scalar(select(AutoFixRun.id).where(AutoFixRun.run_id == run_id).limit(1)) is not None


def autofix_outcomes(session: Session, since: datetime) -> dict[str, int]:
    """Final statuses of the runs finished since ``since`` in which auto-fix acted (all tenants)."""
    acted = select(AutoFixRun.id).where(AutoFixRun.run_id == BuildRun.id).exists()
    stmt = (select(BuildRun.status, func.count()).where(BuildRun.finished_at >= since, acted)
            .group_by(BuildRun.status))
    return {status: n for status, n in session.execute(stmt)}


def retry_state(session: Session, run_id: str) -> RetryStateRow | None:
    return session.scalars(select(RetryStateRow).where(RetryStateRow.run_id == run_id)).first()


@dataclass(frozen=True)
class FlakeRate:
    plan: str
    step: str
    runs: int
    flaky: int

    @property
    def rate(self) -> float:
        return self.flaky / self.runs if self.runs else 0.0


def flake_rates(session: Session, tenant: str, plan: str | None = None) -> list[FlakeRate]:
    """Per plan and step: in how many runs the step ran, and in how many it was found flaky;
    ``plan``: of that plan name only."""
    ran = (select(ScaffoldPlan.name, BuildStep.name, func.count(func.distinct(BuildStep.run_id)))
           .join(BuildRun, BuildRun.id == BuildStep.run_id).join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
           .where(BuildRun.tenant_id == tenant).group_by(ScaffoldPlan.name, BuildStep.name))
    flaky = (select(ScaffoldPlan.name, AutoFixRun.step_name, func.count(func.distinct(AutoFixRun.run_id)))
             .join(BuildRun, BuildRun.id == AutoFixRun.run_id).join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
             .where(BuildRun.tenant_id == tenant, AutoFixRun.outcome == "flaky")
             .group_by(ScaffoldPlan.name, AutoFixRun.step_name))
    if plan is not None:
        ran, flaky = ran.where(ScaffoldPlan.name == plan), flaky.where(ScaffoldPlan.name == plan)
    flaky_counts = {(p, s): n for p, s, n in session.execute(flaky)}
    return sorted((FlakeRate(p, s, n, flaky_counts.get((p, s), 0)) for p, s, n in session.execute(ran)),
                  key=lambda f: (-f.rate, f.plan, f.step))
