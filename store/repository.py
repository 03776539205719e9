"""All queries and writes of the run projection. Writes are upserts keyed by natural ids,
so a retried activity writes the same rows again instead of adding new ones."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from domain.payloads import RunRecord
from domain.plans import plan_to_dict
from store.models import BuildRun, BuildStep, ScaffoldPlan, Tenant, utcnow


def _upsert(session: Session, model: type[Any], values: dict[str, Any], keys: Sequence[str],
            update: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE, in the dialect of the session's engine."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    stmt = insert(model).values(**values)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=list(keys),
                                          set_={col: stmt.excluded[col] for col in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    session.execute(stmt)


def ensure_tenant(session: Session, tenant_id: str, name: str | None = None) -> None:
    _upsert(session, Tenant, {"id": tenant_id, "name": name or tenant_id, "created_at": utcnow()},
            keys=["id"], update=[])


def ensure_plan(session: Session, tenant_id: str, name: str, source: str, spec: dict[str, Any]) -> str:
    """Store a plan once per (tenant, content); return its id."""
    content_hash = hashlib.sha256(source.encode()).hexdigest()
    plan_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"metabuilder:{tenant_id}:{content_hash}"))
    _upsert(session, ScaffoldPlan,
            {"id": plan_id, "tenant_id": tenant_id, "name": name, "content_hash": content_hash,
             "source": source, "spec": spec, "created_at": utcnow()},
            keys=["tenant_id", "content_hash"], update=[])
    return plan_id


def record_run(session: Session, record: RunRecord) -> None:
    """Create or update a run's row from the workflow's view of it."""
    ensure_tenant(session, record.tenant)
    spec = plan_to_dict(record.plan)
    source = record.plan_source or yaml.safe_dump(spec, sort_keys=False)
    plan_id = ensure_plan(session, record.tenant, record.plan.name, source, spec)
    now = utcnow()
    _upsert(session, BuildRun,
            {"id": record.run_id, "tenant_id": record.tenant, "plan_id": plan_id,
             "workflow_id": record.workflow_id, "status": record.status.value, "repo_url": record.repo_url,
             "branch": record.branch, "source": record.source, "base_commit": record.base_commit,
             "head_commit": record.head_commit, "failed_step": record.failed_step, "error": record.error,
             "created_at": now, "updated_at": now,
             "finished_at": now if record.status.is_final else None},
            keys=["id"],
            update=["status", "head_commit", "failed_step", "error", "updated_at", "finished_at"])


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
    """Record an attempt as running; earlier attempts still marked running were lost with their worker."""
    session.execute(
        update(BuildStep)
        .where(BuildStep.run_id == a.run_id, BuildStep.step_index == a.step_index,
               BuildStep.attempt < a.attempt, BuildStep.status == "running")
        .values(status="lost", finished_at=utcnow()))
    _upsert(session, BuildStep,
            {"run_id": a.run_id, "step_index": a.step_index, "attempt": a.attempt, "name": a.name,
             "queue": a.queue, "command": a.command, "status": "running", "commit_before": a.commit_before,
             "worker": a.worker, "log_tail": "", "log_path": "", "started_at": utcnow(),
             "exit_code": None, "duration_seconds": None, "commit_after": None, "finished_at": None},
            keys=["run_id", "step_index", "attempt"],
            update=["status", "worker", "started_at", "exit_code", "duration_seconds", "commit_after",
                    "finished_at", "log_tail", "log_path"])


def step_finished(session: Session, a: StepAttempt, *, status: str, exit_code: int | None,
                  duration_seconds: float, commit_after: str | None, log_tail: str, log_path: str) -> None:
    _upsert(session, BuildStep,
            {"run_id": a.run_id, "step_index": a.step_index, "attempt": a.attempt, "name": a.name,
             "queue": a.queue, "command": a.command, "status": status, "commit_before": a.commit_before,
             "worker": a.worker, "exit_code": exit_code, "duration_seconds": duration_seconds,
             "commit_after": commit_after, "log_tail": log_tail, "log_path": log_path,
             "started_at": utcnow(), "finished_at": utcnow()},
            keys=["run_id", "step_index", "attempt"],
            update=["status", "worker", "exit_code", "duration_seconds", "commit_after", "log_tail",
                    "log_path", "finished_at"])


def get_run(session: Session, run_id: str) -> BuildRun | None:
    return session.get(BuildRun, run_id)


def list_runs(session: Session, *, tenant: str | None = None, status: str | None = None,
              limit: int = 50) -> list[BuildRun]:
    stmt = select(BuildRun).order_by(BuildRun.created_at.desc()).limit(limit)
    if tenant is not None:
        stmt = stmt.where(BuildRun.tenant_id == tenant)
    if status is not None:
        stmt = stmt.where(BuildRun.status == status)
    return list(session.scalars(stmt))


def run_steps(session: Session, run_id: str) -> list[BuildStep]:
    stmt = select(BuildStep).where(BuildStep.run_id == run_id).order_by(BuildStep.step_index, BuildStep.attempt)
    return list(session.scalars(stmt))

