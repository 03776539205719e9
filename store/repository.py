"""All queries and writes of the run projection. Writes are upserts keyed by natural ids,
so a retried activity writes the same rows again instead of adding new ones."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, defer, joinedload

from metabuilder.domain.payloads import AutofixEvent, AutofixRecord, RunRecord
from metabuilder.domain.plans import Plan, plan_to_dict, step_to_dict
from metabuilder.domain.runs import AttemptStatus, RunStatus
from metabuilder.store.models import (
    AuditEvent,
    AutoFixRun,
    BuildRun,
    BuildStep,
    PlanDeltaRow,
    RepairAttempt,
    RetryStateRow,
    ScaffoldPlan,
    Tenant,
    TenantSettings,
    utcnow,
)


def stable_id(*parts: object) -> str:
    """A UUID derived from natural keys: the same record written twice gets the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "metabuilder:" + ":".join(map(str, parts))))


def upsert(session: Session, model: type[Any], values: dict[str, Any], keys: Sequence[str],
            update: Sequence[str]) -> bool:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the dialect of the session's engine. With no
    columns to update (DO NOTHING), returns whether a row was inserted; otherwise True."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    stmt = insert(model).values(**values)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={col: stmt.excluded[col] for col in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    result = session.execute(stmt)
    return bool(getattr(result, "rowcount", 1))


def ensure_tenant(session: Session, tenant_id: str, name: str | None = None) -> None:
    upsert(session, Tenant, {"id": tenant_id, "name": name or tenant_id, "created_at": utcnow()},
            keys=["id"], update=[])


def ensure_plan(session: Session, tenant_id: str, name: str, source: str, spec: dict[str, Any]) -> str:
    """Store a plan once per (tenant, content); return its id."""
    content_hash = hashlib.sha256(source.encode()).hexdigest()
    plan_id = stable_id(tenant_id, content_hash)
    upsert(session, ScaffoldPlan,
            {"id": plan_id, "tenant_id": tenant_id, "name": name, "content_hash": content_hash,
             "source": source, "spec": spec, "created_at": utcnow()},
            keys=["tenant_id", "content_hash"], update=[])
    return plan_id


def ensure_plan_of(session: Session, tenant_id: str, plan: Plan, source: str = "") -> str:
    """Store ``plan`` (with its YAML text, or a YAML rendering of it); return its id."""
    spec = plan_to_dict(plan)
    return ensure_plan(session, tenant_id, plan.name, source or yaml.safe_dump(spec, sort_keys=False), spec)


def record_run(session: Session, record: RunRecord) -> str | None:
    """Create or update a run's row from the workflow's view of it; return the status it had
    before (None for a new run), so that callers can tell a transition from a rewrite."""
    previous = session.scalar(select(BuildRun.status).where(BuildRun.id == record.run_id))
    ensure_tenant(session, record.tenant)
    plan_id = ensure_plan_of(session, record.tenant, record.plan, record.plan_source)
    now = utcnow()
    upsert(session, BuildRun,
            {"id": record.run_id, "tenant_id": record.tenant, "plan_id": plan_id,
             "workflow_id": record.workflow_id, "status": record.status.value, "repo_url": record.repo_url,
             "branch": record.branch, "source": record.source, "base_commit": record.base_commit,
             "head_commit": record.head_commit, "failed_step": record.failed_step, "error": record.error,
             "iteration": record.iteration, "retry_of": record.retry_of, "settings": dict(record.settings),
             "next_overrides": {}, "created_at": now, "updated_at": now,
             "finished_at": now if record.status.is_final else None},
            keys=["id"],
            update=["status", "head_commit", "failed_step", "error", "updated_at", "finished_at"])
    if record.status.is_final:
        # A worker that died with the run's last attempt (or a cancel that reached no worker) left
        # no one to close it: the run's end does, so that no attempt of an ended run stays open.
        cancelled = record.status == RunStatus.CANCELLED
        close_open_attempts(
            session, record.run_id, AttemptStatus.CANCELLED if cancelled else AttemptStatus.LOST,
            f"[metabuilder] closed when the run ended {record.status.value}: the attempt's worker never "
            "reported how it ended")
    return previous


def has_autofix(session: Session, run_id: str) -> bool:
    """Whether auto-fix acted in the run (at least one timeline entry)."""
    return session.scalar(select(AutoFixRun.id).where(AutoFixRun.run_id == run_id).limit(1)) is not None


@dataclass(frozen=True)
class StepAttempt:
    run_id: str
    step_index: int
    attempt: int
    name: str
    queue: str
    command: str
    commit_before: str
    worker: str


def step_started(session: Session, a: StepAttempt) -> None:
    """Record an attempt as running. Earlier attempts still running are settled by the attempt
    itself once it holds the checkout (see ``close_attempt``), not here: only then is it known
    whether their command finished."""
    upsert(session, BuildStep,
            {"run_id": a.run_id, "step_index": a.step_index, "attempt": a.attempt, "name": a.name,
             "queue": a.queue, "command": a.command, "status": "running", "commit_before": a.commit_before,
             "worker": a.worker, "log_tail": "", "log_path": "", "started_at": utcnow(),
             "exit_code": None, "duration_seconds": None, "commit_after": None, "finished_at": None},
            keys=["run_id", "step_index", "attempt"],
            update=["status", "worker", "started_at", "exit_code", "duration_seconds", "commit_after",
                    "finished_at", "log_tail", "log_path"])


@dataclass(frozen=True)
class AttemptSignal:
    """How a failed attempt was classified, and the delay before its retry (if any)."""

    signal_type: str
    confidence: float
    fingerprint: str
    evidence: str = ""
    backoff_seconds: float | None = None
    retry_after_seconds: float | None = None


def step_finished(session: Session, a: StepAttempt, *, status: str, exit_code: int | None,
                  duration_seconds: float, commit_after: str | None, log_tail: str, log_path: str,
                  signal: AttemptSignal | None = None) -> None:
    classified = {"signal_type": None, "confidence": None, "fingerprint": None, "evidence": "",
                  "backoff_seconds": None, "retry_after_seconds": None}
    if signal is not None:
        classified.update(vars(signal))
    upsert(session, BuildStep,
            {"run_id": a.run_id, "step_index": a.step_index, "attempt": a.attempt, "name": a.name,
             "queue": a.queue, "command": a.command, "status": status, "commit_before": a.commit_before,
             "worker": a.worker, "exit_code": exit_code, "duration_seconds": duration_seconds,
             "commit_after": commit_after, "log_tail": log_tail, "log_path": log_path,
             "started_at": utcnow(), "finished_at": utcnow(), **classified},
            keys=["run_id", "step_index", "attempt"],
            update=["status", "worker", "exit_code", "duration_seconds", "commit_after", "log_tail",
                    "log_path", "finished_at", *classified])


def close_attempt(session: Session, run_id: str, step_index: int, attempt: int, status: AttemptStatus, *,
                  reason: str, exit_code: int | None = None, commit_after: str | None = None,
                  log_path: str | None = None,
                  open_statuses: Sequence[AttemptStatus] = (AttemptStatus.RUNNING,)) -> bool:
    """Give an attempt whose worker did not report (it is in one of ``open_statuses``) the end
    found for it, with the reason as its log tail; return whether a row changed."""
    values: dict[str, Any] = {"status": status.value, "log_tail": reason, "finished_at": utcnow()}
    if exit_code is not None:
        values["exit_code"] = exit_code
    if commit_after is not None:
        values["commit_after"] = commit_after
    if log_path is not None:
        values["log_path"] = log_path
    result = session.execute(
        update(BuildStep)
        .where(BuildStep.run_id == run_id, BuildStep.step_index == step_index, BuildStep.attempt == attempt,
               BuildStep.status.in_([s.value for s in open_statuses]))
        .values(**values))
    return bool(getattr(result, "rowcount", 0))


def close_open_attempts(session: Session, run_id: str, status: AttemptStatus, reason: str) -> int:
    """At the end of a run: every attempt of it still ``running`` gets ``status`` and the reason."""
    result = session.execute(
        update(BuildStep)
        .where(BuildStep.run_id == run_id, BuildStep.status == AttemptStatus.RUNNING.value)
        .values(status=status.value, log_tail=reason, finished_at=utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def step_attempts(session: Session, run_id: str, step_index: int, first: int, last: int) -> list[BuildStep]:
    """Attempts ``first``..``last`` (inclusive) of one step, in order."""
    stmt = (select(BuildStep)
            .where(BuildStep.run_id == run_id, BuildStep.step_index == step_index,
                   BuildStep.attempt >= first, BuildStep.attempt <= last)
            .order_by(BuildStep.attempt))
    return list(session.scalars(stmt))


def get_run(session: Session, run_id: str) -> BuildRun | None:
    return session.get(BuildRun, run_id)


def list_runs(session: Session, *, tenant: str | None = None, status: str | None = None, plan: str | None = None,
              limit: int = 50, offset: int = 0) -> list[BuildRun]:
    """Runs, newest first, optionally of one tenant, in one status, of plans of one name. Their JSON
    columns and their plans' text are loaded when first read: a list shows neither, and decoding
    them for every row was most of the cost of a list."""
    stmt = (select(BuildRun).options(defer(BuildRun.settings), defer(BuildRun.next_overrides),
                                     joinedload(BuildRun.plan).load_only(ScaffoldPlan.name))
            .order_by(BuildRun.created_at.desc(), BuildRun.id).limit(limit).offset(offset))
    if tenant is not None:
        stmt = stmt.where(BuildRun.tenant_id == tenant)
    if status is not None:
        stmt = stmt.where(BuildRun.status == status)
    if plan is not None:
        stmt = stmt.join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id).where(ScaffoldPlan.name == plan)
    return list(session.scalars(stmt))


RUN_SUMMARY = (BuildRun.id.label("run_id"), BuildRun.tenant_id.label("tenant"), ScaffoldPlan.name.label("plan"),
               BuildRun.status, BuildRun.iteration, BuildRun.retry_of, BuildRun.workflow_id, BuildRun.branch,
               BuildRun.base_commit, BuildRun.head_commit, BuildRun.failed_step, BuildRun.error, BuildRun.created_at,
               BuildRun.finished_at)
"""The columns of a run in a list (``store.views.run_fields``'s keys)."""


def run_summaries(session: Session, *, tenant: str, status: str | None = None, plan: str | None = None,
                  limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """``list_runs`` as ``run_fields`` dicts, read as plain rows: no ORM objects (building one per
    row and reading its attributes was most of the CPU of a list through the API)."""
    stmt = (select(*RUN_SUMMARY).join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
            .where(BuildRun.tenant_id == tenant)
            .order_by(BuildRun.created_at.desc(), BuildRun.id).limit(limit).offset(offset))
    if status is not None:
        stmt = stmt.where(BuildRun.status == status)
    if plan is not None:
        stmt = stmt.where(ScaffoldPlan.name == plan)
    return [dict(row) for row in session.execute(stmt).mappings()]


def get_plan(session: Session, plan_id: str) -> ScaffoldPlan | None:
    return session.get(ScaffoldPlan, plan_id)


def list_plans(session: Session, tenant: str, *, limit: int = 50, offset: int = 0) -> list[ScaffoldPlan]:
    stmt = (select(ScaffoldPlan).where(ScaffoldPlan.tenant_id == tenant)
            .order_by(ScaffoldPlan.created_at.desc(), ScaffoldPlan.id).limit(limit).offset(offset))
    return list(session.scalars(stmt))


def run_plan_source(session: Session, run: BuildRun) -> str:
    """The YAML text of the plan a run was started with."""
    plan = session.get(ScaffoldPlan, run.plan_id)
    assert plan is not None  # a foreign key
    return plan.source


def run_steps(session: Session, run_id: str) -> list[BuildStep]:
    stmt = select(BuildStep).where(BuildStep.run_id == run_id).order_by(BuildStep.step_index, BuildStep.attempt)
    return list(session.scalars(stmt))



# --- auto-fix -----------------------------------------------------------------------------------

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


def audit_events(session: Session, *, tenant: str, run_id: str | None = None, event: str | None = None,
                 limit: int | None = None, offset: int = 0) -> list[AuditEvent]:
    """A tenant's audit events, oldest first; of one run, of one event name (``approval.granted``)
    or, ending in ``.*``, of one family (``autofix.*``)."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant).order_by(AuditEvent.created_at, AuditEvent.id)
    if run_id is not None:
        stmt = stmt.where(AuditEvent.run_id == run_id)
    if event is not None:
        stmt = (stmt.where(AuditEvent.event.startswith(event[:-1], autoescape=True)) if event.endswith(".*")
                else stmt.where(AuditEvent.event == event))
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def run_counts(session: Session) -> dict[str, int]:
    """How many runs are in each status now (all tenants)."""
    return {status: n for status, n in session.execute(
        select(BuildRun.status, func.count()).group_by(BuildRun.status))}


def autofix_outcomes(session: Session, since: datetime) -> dict[str, int]:
    """Final statuses of the runs finished since ``since`` in which auto-fix acted (all tenants)."""
    acted = select(AutoFixRun.id).where(AutoFixRun.run_id == BuildRun.id).exists()
    stmt = (select(BuildRun.status, func.count()).where(BuildRun.finished_at >= since, acted)
            .group_by(BuildRun.status))
    return {status: n for status, n in session.execute(stmt)}


def retry_state(session: Session, run_id: str) -> RetryStateRow | None:
    return session.scalars(select(RetryStateRow).where(RetryStateRow.run_id == run_id)).first()


def tenant_autofix(session: Session, tenant_id: str) -> dict[str, Any]:
    """The tenant's auto-fix overrides (empty: none, the platform's values apply)."""
    row = session.get(TenantSettings, tenant_id)
    return dict(row.autofix) if row else {}


def set_tenant_autofix(session: Session, tenant_id: str, overrides: dict[str, Any]) -> None:
    """Replace the tenant's overrides (``{}`` resets it to the platform defaults)."""
    ensure_tenant(session, tenant_id)
    upsert(session, TenantSettings, {"tenant_id": tenant_id, "autofix": overrides, "updated_at": utcnow()},
            keys=["tenant_id"], update=["autofix", "updated_at"])


@dataclass(frozen=True)
class FlakeRate:
    plan: str
    step: str
    runs: int
    flaky: int

    @property
    def rate(self) -> float:
        return self.flaky / self.runs if self.runs else 0.0


def flake_rates(session: Session, tenant: str) -> list[FlakeRate]:
    """Per plan and step: in how many runs the step ran, and in how many it was found flaky."""
    ran = (select(ScaffoldPlan.name, BuildStep.name, func.count(func.distinct(BuildStep.run_id)))
           .join(BuildRun, BuildRun.id == BuildStep.run_id).join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
           .where(BuildRun.tenant_id == tenant).group_by(ScaffoldPlan.name, BuildStep.name))
    flaky = (select(ScaffoldPlan.name, AutoFixRun.step_name, func.count(func.distinct(AutoFixRun.run_id)))
             .join(BuildRun, BuildRun.id == AutoFixRun.run_id).join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
             .where(BuildRun.tenant_id == tenant, AutoFixRun.outcome == "flaky")
             .group_by(ScaffoldPlan.name, AutoFixRun.step_name))
    flaky_counts = {(p, s): n for p, s, n in session.execute(flaky)}
    return sorted((FlakeRate(p, s, n, flaky_counts.get((p, s), 0)) for p, s, n in session.execute(ran)),
                  key=lambda f: (-f.rate, f.plan, f.step))
