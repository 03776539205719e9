"""Chaos scopes and injections (``mb_v4_chaos_scope``, ``mb_v4_chaos_event``).

An injection is written once per (run, step index, attempt number): a re-delivered attempt finds
its row and counts nothing. It settles ``recovered`` when a later attempt of the step (or the
same one, for a latency) passes, ``unrecovered`` when its run ends first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from metabuilder.domain.chaos import ChaosScope as Scope
from metabuilder.domain.chaos import ChaosSettings, EventFacts, EventOutcome, Fault, FaultType
from metabuilder.store.models import BuildRun, ChaosEvent, ChaosScope, utcnow


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored in UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def to_scope(row: ChaosScope, defaults: ChaosSettings) -> Scope:
    """The scope of a row, its NULL columns taken from the worker's settings."""
    weights = ({FaultType(k): float(v) for k, v in row.weights.items()} if row.weights is not None
               else dict(defaults.weights))
    return Scope(tenant=row.tenant_id, run_id=row.run_id,
                 probability=row.probability if row.probability is not None else defaults.probability,
                 weights=weights, seed=row.seed if row.seed is not None else defaults.seed,
                 steps=tuple(row.steps or ()), max_attempt=row.max_attempt,
                 expires_at=aware(row.expires_at).timestamp() if row.expires_at else None)


def scopes(session: Session, tenant: str | None = None) -> list[ChaosScope]:
    stmt = select(ChaosScope).order_by(ChaosScope.tenant_id, ChaosScope.run_id)
    if tenant is not None:
        stmt = stmt.where(ChaosScope.tenant_id == tenant)
    return list(session.scalars(stmt))


def put_scope(session: Session, row: ChaosScope) -> tuple[ChaosScope | None, ChaosScope]:
    """Set the scope of (tenant, run); returns (the one it replaced or None, the new one)."""
    old = session.scalars(select(ChaosScope).where(ChaosScope.tenant_id == row.tenant_id,
                                                   ChaosScope.run_id == row.run_id)).first()
    before = None
    if old is not None:
        before = ChaosScope(**{c: getattr(old, c) for c in _SCOPE_COLUMNS})
        for column in _SCOPE_COLUMNS:
            if column not in ("id", "created_at"):
                setattr(old, column, getattr(row, column))
        old.created_at = utcnow()
        session.flush()
        return before, old
    session.add(row)
    session.flush()
    return None, row


def delete_scope(session: Session, tenant: str, run_id: str = "") -> ChaosScope | None:
    old = session.scalars(select(ChaosScope).where(ChaosScope.tenant_id == tenant,
                                                   ChaosScope.run_id == run_id)).first()
    if old is not None:
        session.delete(old)
        session.flush()
    return old


_SCOPE_COLUMNS = ("id", "tenant_id", "run_id", "probability", "weights", "seed", "steps", "max_attempt",
                  "expires_at", "created_by", "created_at")


def record_injection(session: Session, *, tenant: str, run_id: str, step_index: int, step_name: str,
                     attempt: int, fault: Fault, worker: str) -> bool:
    """Write the injection once; whether this call wrote it."""
    if session.scalars(select(ChaosEvent.id).where(ChaosEvent.run_id == run_id, ChaosEvent.step_index == step_index,
                                                   ChaosEvent.attempt == attempt)).first() is not None:
        return False
    expected = fault.expected_class
    try:
        with session.begin_nested():
            session.add(ChaosEvent(tenant_id=tenant, run_id=run_id, step_index=step_index, step_name=step_name,
                                   attempt=attempt, fault_type=fault.type.value,
                                   expected_class=expected.value if expected else None, seconds=fault.seconds,
                                   roll=fault.roll, worker=worker, injected_at=utcnow(),
                                   outcome=EventOutcome.PENDING.value, detail=""))
    except IntegrityError:  # another worker wrote it first
        return False
    return True


def mark_recovered(session: Session, run_id: str, step_name: str, attempt: int,
                   now: datetime | None = None) -> list[tuple[FaultType, float]]:
    """Settle the step's pending injections up to ``attempt`` as recovered by it; returns the
    (type, recovery seconds) of each one this call settled."""
    now = now or utcnow()
    rows = session.scalars(select(ChaosEvent).where(
        ChaosEvent.run_id == run_id, ChaosEvent.step_name == step_name, ChaosEvent.attempt <= attempt,
        ChaosEvent.outcome == EventOutcome.PENDING.value).with_for_update()).all()
    settled = []
    for row in rows:
        seconds = round(max(0.0, (now - aware(row.injected_at)).total_seconds()), 3)
        row.outcome, row.recovered_at, row.recovery_seconds = EventOutcome.RECOVERED.value, now, seconds
        row.recovered_attempt = attempt
        row.detail = (f"attempt {attempt} passed" if attempt != row.attempt
                      else "the attempt passed (slower)")
        settled.append((FaultType(row.fault_type), seconds))
    return settled


def settle_ended_runs(session: Session, tenant: str | None = None) -> int:
    """Pending injections of runs that have ended: ``unrecovered``, with the run's status."""
    stmt = (select(ChaosEvent, BuildRun.status).join(BuildRun, BuildRun.id == ChaosEvent.run_id)
            .where(ChaosEvent.outcome == EventOutcome.PENDING.value, BuildRun.finished_at.is_not(None)))
    if tenant is not None:
        stmt = stmt.where(ChaosEvent.tenant_id == tenant)
    count = 0
    for event, status in session.execute(stmt).all():
        event.outcome, event.detail = EventOutcome.UNRECOVERED.value, f"the run ended {status} first"
        count += 1
    return count


def delete_expired(session: Session, before: datetime) -> int:
    """Drop the injections recorded before ``before`` (the retention); how many."""
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        delete(ChaosEvent).where(ChaosEvent.injected_at < before))
    return result.rowcount or 0


def events(session: Session, *, tenant: str | None = None, run_id: str | None = None,
           since: datetime | None = None) -> Sequence[ChaosEvent]:
    stmt = select(ChaosEvent).order_by(ChaosEvent.injected_at, ChaosEvent.id)
    if tenant is not None:
        stmt = stmt.where(ChaosEvent.tenant_id == tenant)
    if run_id is not None:
        stmt = stmt.where(ChaosEvent.run_id == run_id)
    if since is not None:
        stmt = stmt.where(ChaosEvent.injected_at >= since)
    return session.scalars(stmt).all()


def facts(rows: Sequence[ChaosEvent]) -> list[EventFacts]:
    return [EventFacts(FaultType(r.fault_type), EventOutcome(r.outcome), r.recovery_seconds) for r in rows]
