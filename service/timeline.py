"""One ordered timeline of everything that happened in a run (seed 002 ``GET .../timeline``):
the run's start and end, each step attempt's start and end, every auto-fix entry
(classifications, retries, flake checks, patches, re-plans, rollbacks, escalations), each plan
change, each gate opened and decided, each wait on a circuit breaker, each LLM call with its
tokens and cost (a call a budget refused is an ``autofix.patch`` entry, outcome ``budget_exhausted``),
each chaos injection and recovery, and each outbound call (an LLM, a webhook) the domain allowlist
refused. Read from the DB
projection; events at the same moment keep the order they were written in."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.service.tenancy import own_run
from metabuilder.store import approvals, audit, autofix
from metabuilder.store import chaos as chaos_rows
from metabuilder.store import sla as sla_rows
from metabuilder.store import steps as step_rows
from metabuilder.store.models import CircuitBreakerState, CircuitBreakerWait, CostRecordRow


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str
    """``run.started``, ``step.started``, ``step.finished``, ``autofix.<strategy>``, ``plan.changed``,
    ``gate.opened``, ``gate.decided``, ``breaker.waiting``, ``budget.llm_call``, ``chaos.injected``,
    ``chaos.recovered``, ``egress.refused``, ``run.finished``; for a run with an SLA class
    ``sla.warning``, ``sla.violated``, ``sla.depth``, ``model.chosen``, ``patch.candidates``."""
    summary: str
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite hands timestamps back naive


def run_timeline(session: Session, run_id: str, tenant: str | None) -> list[TimelineEvent]:
    """The run's timeline, oldest first; ``NotFound`` for a run of another tenant or none."""
    run = own_run(session, run_id, tenant)
    out: list[TimelineEvent] = [TimelineEvent(run.created_at, "run.started", f"run of plan {run.plan.name!r} started",
                                              data={"iteration": run.iteration, "retry_of": run.retry_of})]
    for s in step_rows.run_steps(session, run_id):
        out.append(TimelineEvent(s.started_at, "step.started", f"{s.name} attempt {s.attempt} started on {s.worker}",
                                 s.name, {"attempt": s.attempt, "queue": s.queue, "command": s.command}))
        if s.finished_at is not None:
            what = f"{s.name} attempt {s.attempt} {s.status}" + (
                f" (exit {s.exit_code}{', ' + s.signal_type if s.signal_type else ''})" if s.exit_code else "")
            out.append(TimelineEvent(s.finished_at, "step.finished", what, s.name, {
                "attempt": s.attempt, "status": s.status, "exit_code": s.exit_code,
                "duration_seconds": s.duration_seconds, "signal_type": s.signal_type,
                "confidence": s.confidence, "backoff_seconds": s.backoff_seconds, "commit": s.commit_after}))
    for e in autofix.autofix_timeline(session, run_id):
        out.append(TimelineEvent(e.created_at, f"autofix.{e.strategy}", f"{e.step_name}: {e.strategy} {e.outcome}"
                                 + (f": {e.detail}" if e.detail else ""), e.step_name, {
                                     "outcome": e.outcome, "signal_type": e.signal_type, "confidence": e.confidence,
                                     "attempt": e.attempt, "backoff_seconds": e.backoff, "commit": e.commit}))
    for d in autofix.plan_deltas(session, run_id):
        out.append(TimelineEvent(d.created_at, "plan.changed", f"plan changed: {d.delta_data.get('kind')} for "
                                 f"{d.delta_data.get('step')} ({d.triggered_by})", d.delta_data.get("step"),
                                 dict(d.delta_data)))
    for g in approvals.list_gates(session, tenant=run.tenant_id, run_id=run_id, limit=1000):
        out.append(TimelineEvent(g.opened_at, "gate.opened", f"{g.kind} gate opened: {g.reason}", g.step_name,
                                 {"gate_id": g.id, "action": g.action, "signal_type": g.signal_type}))
        if g.decided_at is not None:
            out.append(TimelineEvent(g.decided_at, "gate.decided", f"gate {g.status} by {g.decided_by}"
                                     + (f": {g.decision_reason}" if g.decision_reason else ""), g.step_name,
                                     {"gate_id": g.id, "status": g.status, "by": g.decided_by}))
    for c in session.scalars(select(CostRecordRow).where(CostRecordRow.run_id == run_id, CostRecordRow.kind == "llm")
                             .order_by(CostRecordRow.created_at)):
        out.append(TimelineEvent(c.created_at, "budget.llm_call",
                                 f"{c.step_name}: LLM call to {c.model}: {c.tokens_in} tokens in, {c.tokens_out} out, "
                                 f"${c.cost_usd:.6f}", c.step_name,
                                 {"model": c.model, "tokens_in": c.tokens_in, "tokens_out": c.tokens_out,
                                  "cost_usd": c.cost_usd, "reservation": c.reservation_id}))
    waits = session.execute(select(CircuitBreakerWait, CircuitBreakerState)
                            .join(CircuitBreakerState, CircuitBreakerState.id == CircuitBreakerWait.breaker_id)
                            .where(CircuitBreakerWait.run_id == run_id))
    for w, b in waits:
        name = f"{b.tenant_id}/{b.failure_class}/{b.dependency}"
        out.append(TimelineEvent(w.since, "breaker.waiting", f"{w.step_name} waits on circuit breaker {name}",
                                 w.step_name, {"breaker": name}))
    for a in audit.audit_events(session, tenant=run.tenant_id, run_id=run_id, event="egress.refused"):
        data = dict(a.data or {})
        out.append(TimelineEvent(a.created_at, "egress.refused", f"{data.get('purpose', 'outbound call')} to "
                                 f"{a.target} refused: {data.get('reason')}", data.get("step"),
                                 {"target": a.target, "url": data.get("url"), "purpose": data.get("purpose")}))
    for inj in chaos_rows.events(session, run_id=run_id):
        out.append(TimelineEvent(inj.injected_at, "chaos.injected",
                                 f"{inj.step_name} attempt {inj.attempt}: chaos injected a {inj.fault_type} fault"
                                 + (f" ({inj.detail})" if inj.detail else ""), inj.step_name,
                                 {"fault_type": inj.fault_type, "attempt": inj.attempt,
                                  "expected_class": inj.expected_class, "outcome": inj.outcome}))
        if inj.recovered_at is not None:
            out.append(TimelineEvent(inj.recovered_at, "chaos.recovered",
                                     f"{inj.step_name}: recovered from the {inj.fault_type} fault"
                                     + (f" on attempt {inj.recovered_attempt}" if inj.recovered_attempt else "")
                                     + (f" after {inj.recovery_seconds:.1f}s" if inj.recovery_seconds is not None
                                        else ""), inj.step_name,
                                     {"fault_type": inj.fault_type, "recovery_seconds": inj.recovery_seconds,
                                      "attempt": inj.recovered_attempt}))
    for ev in sla_rows.run_sla_events(session, run_id):
        out.append(TimelineEvent(ev.at, ev.kind, ev.summary, ev.step_name, dict(ev.data)))
    if run.finished_at is not None:
        out.append(TimelineEvent(run.finished_at, "run.finished", f"run {run.status}"
                                 + (f": {run.error}" if run.error else ""), run.failed_step, {"status": run.status}))
    fixed = [TimelineEvent(_utc(e.at), e.kind, e.summary, e.step, e.data) for e in out]
    return [e for _, e in sorted(enumerate(fixed), key=lambda p: (p[1].at, p[0]))]
