"""Step attempts: one row per (run, step, attempt), written when it starts and when it ends,
and closed by whoever learns how an attempt whose worker never reported ended."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from metabuilder.domain.runs import AttemptStatus, attempt_key
from metabuilder.store.models import BuildStep, utcnow
from metabuilder.store.rows import upsert


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

    @property
    def idempotency_key(self) -> str:
        """The attempt's key (``domain.runs.attempt_key``), unique among all attempts."""
        return attempt_key(self.run_id, self.step_index, self.attempt)


def step_started(session: Session, a: StepAttempt) -> None:
    """Record an attempt as running. Earlier attempts still running are settled by the attempt
    itself once it holds the checkout (see ``close_attempt``), not here: only then is it known
    whether their command finished."""
    upsert(session, BuildStep,
            {"run_id": a.run_id, "step_index": a.step_index, "attempt": a.attempt, "name": a.name,
             "queue": a.queue, "command": a.command, "status": "running", "commit_before": a.commit_before,
             "worker": a.worker, "log_tail": "", "log_path": "", "started_at": utcnow(),
             "idempotency_key": a.idempotency_key,
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
             "started_at": utcnow(), "finished_at": utcnow(), "idempotency_key": a.idempotency_key, **classified},
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


def run_steps(session: Session, run_id: str) -> list[BuildStep]:
    stmt = select(BuildStep).where(BuildStep.run_id == run_id).order_by(BuildStep.step_index, BuildStep.attempt)
    return list(session.scalars(stmt))


STEP_VIEW = (BuildStep.step_index, BuildStep.attempt, BuildStep.name, BuildStep.queue, BuildStep.status,
             BuildStep.exit_code, BuildStep.duration_seconds, BuildStep.commit_before, BuildStep.commit_after,
             BuildStep.signal_type, BuildStep.log_tail)
"""The columns ``store.views.step_fields`` reads."""


def run_step_rows(session: Session, run_id: str) -> list[Row[Any]]:
    """``run_steps`` as plain rows of ``STEP_VIEW`` (read by attribute like a ``BuildStep``), no ORM objects."""
    stmt = select(*STEP_VIEW).where(BuildStep.run_id == run_id).order_by(BuildStep.step_index, BuildStep.attempt)
    return list(session.execute(stmt))
