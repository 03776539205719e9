"""Build runs: the workflow's view of each run, upserted as it changes, and the queries that read it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, defer, joinedload

from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.runs import AttemptStatus, RunStatus
from metabuilder.store.models import BuildRun, CircuitBreakerWait, QueueLease, ScaffoldPlan, utcnow
from metabuilder.store.plans import ensure_plan_of
from metabuilder.store.rows import upsert
from metabuilder.store.steps import close_open_attempts
from metabuilder.store.tenants import ensure_tenant


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
             "branch": record.branch, "source": record.source,
             "source_branch": record.source_branch, "base_commit": record.base_commit,
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
        # nor does an ended run wait on a circuit breaker any more
        session.execute(delete(CircuitBreakerWait).where(CircuitBreakerWait.run_id == record.run_id))
        # and no worker holds any of its steps (a dead worker's lease would otherwise stay)
        session.execute(delete(QueueLease).where(QueueLease.run_id == record.run_id))
    return previous


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


def run_counts(session: Session) -> dict[str, int]:
    """How many runs are in each status now (all tenants)."""
    return {status: n for status, n in session.execute(
        select(BuildRun.status, func.count()).group_by(BuildRun.status))}


def set_next_overrides(session: Session, run: BuildRun, overrides: dict[str, Any]) -> None:
    """Replace the run-level overrides that the run's retries start with (the run keeps its own)."""
    run.next_overrides = overrides
    session.flush()


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


def run_summary(session: Session, run_id: str) -> dict[str, Any] | None:
    """One run as ``run_summaries`` reads it (plain, no ORM object), with its ``settings`` too."""
    row = session.execute(select(*RUN_SUMMARY, BuildRun.settings)
                          .join(ScaffoldPlan, ScaffoldPlan.id == BuildRun.plan_id)
                          .where(BuildRun.id == run_id)).mappings().first()
    return None if row is None else dict(row)
