"""Circuit breakers' durable state: ``domain.breakers`` values kept in ``mb_v4_circuit_breaker_state``.

Every change is a compare-and-set: read the row and its ``version``, compute the next value with
a pure function, and write it only if the version is still the one read. Two workers recording
failures of one dependency at the same moment therefore never lose a count, and exactly one run
wins the probe of a half-open breaker. The loser of a race reads again and recomputes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.breakers import (
    Breaker,
    BreakerKey,
    BreakerPolicy,
    BreakerState,
    Decision,
    Transition,
    admit,
)
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store.db import transaction
from metabuilder.store.models import BuildRun, CircuitBreakerState, CircuitBreakerWait, utcnow
from metabuilder.store.repository import ensure_tenant

_ATTEMPTS = 20


class BreakerConflict(RuntimeError):
    """The row kept changing under us (only under a pathological storm of writers)."""


def _ts(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def to_breaker(row: CircuitBreakerState) -> Breaker:
    return Breaker(key=BreakerKey(row.tenant_id, FailureType(row.failure_class), row.dependency),
                   state=BreakerState(row.state), failures=tuple(row.failures or ()), opened_at=_ts(row.opened_at),
                   cooldown_seconds=row.cooldown_seconds, next_probe_at=_ts(row.next_probe_at),
                   probe_run=row.probe_run_id, probe_started_at=_ts(row.probe_started_at), trips=row.trips,
                   forced=row.forced)


def _columns(b: Breaker) -> dict[str, object]:
    return {"state": str(b.state), "failures": list(b.failures), "opened_at": _dt(b.opened_at),
            "cooldown_seconds": b.cooldown_seconds, "next_probe_at": _dt(b.next_probe_at),
            "probe_run_id": b.probe_run, "probe_started_at": _dt(b.probe_started_at), "trips": b.trips,
            "forced": b.forced}


def _row(s: Session, key: BreakerKey, *, lock: bool = False) -> CircuitBreakerState | None:
    """The breaker's row; ``lock``: held until the transaction ends (``FOR UPDATE`` on PostgreSQL;
    SQLite has one writer at a time anyway)."""
    stmt = select(CircuitBreakerState).where(
        CircuitBreakerState.tenant_id == key.tenant, CircuitBreakerState.failure_class == str(key.failure_class),
        CircuitBreakerState.dependency == key.dependency)
    return s.scalars(stmt.with_for_update() if lock else stmt).one_or_none()


def get(sessions: sessionmaker[Session], key: BreakerKey) -> Breaker:
    """The breaker's state; a breaker never written is closed."""
    with transaction(sessions) as s:
        row = _row(s, key)
        return to_breaker(row) if row else Breaker(key)


Step = Callable[[Breaker], tuple[Breaker, Transition | None]]


Audit = Callable[[Session, Breaker, Breaker], None]


def change(sessions: sessionmaker[Session], key: BreakerKey, step: Step,
           audit: Audit | None = None) -> tuple[Breaker, Transition | None]:
    """Apply ``step``, a pure function of the current value (``record_failure``...), atomically.

    ``audit(session, before, after)`` runs in the same transaction as the write (when there is one)."""
    for _ in range(_ATTEMPTS):
        try:
            with transaction(sessions) as s:
                row = _row(s, key, lock=True)
                if row is None:
                    ensure_tenant(s, key.tenant)
                    row = CircuitBreakerState(tenant_id=key.tenant, failure_class=str(key.failure_class),
                                              dependency=key.dependency, state="closed", failures=[], trips=0,
                                              forced=False, last_reason="", version=0, updated_at=utcnow())
                    s.add(row)
                    s.flush()
                current = to_breaker(row)
                after, moved = step(current)
                if after == current:
                    if audit is not None:
                        audit(s, current, after)
                    return after, moved
                values = _columns(after) | {"version": row.version + 1, "updated_at": utcnow()}
                if moved is not None:
                    values["last_reason"] = moved.reason
                done = s.execute(update(CircuitBreakerState)
                                 .where(CircuitBreakerState.id == row.id, CircuitBreakerState.version == row.version)
                                 .values(**values).execution_options(synchronize_session=False))
                if getattr(done, "rowcount", 0) == 1:
                    if audit is not None:
                        audit(s, current, after)
                    return after, moved
        except IntegrityError:
            pass  # another writer created the row first: read it again
    raise BreakerConflict(f"breaker {key} changed {_ATTEMPTS} times while we tried to update it")


def admit_run(sessions: sessionmaker[Session], key: BreakerKey, run_id: str, policy: BreakerPolicy,
              now: float) -> Decision:
    """``domain.breakers.admit`` under the compare-and-set: one run wins a half-open probe."""
    decided: list[Decision] = []

    def step(b: Breaker) -> tuple[Breaker, Transition | None]:
        decided[:] = [admit(b, now, run_id, policy)]
        return decided[0].breaker or b, decided[0].transition

    change(sessions, key, step)
    return decided[-1]


def open_breakers(sessions: sessionmaker[Session], tenant: str, dependencies: Iterable[str]) -> list[Breaker]:
    """The tenant's breakers on these dependencies that are not closed (any class)."""
    deps = list(dict.fromkeys(dependencies))
    if not deps:
        return []
    with transaction(sessions) as s:
        rows = s.scalars(select(CircuitBreakerState).where(
            CircuitBreakerState.tenant_id == tenant, CircuitBreakerState.dependency.in_(deps),
            CircuitBreakerState.state != "closed").order_by(CircuitBreakerState.id)).all()
        return [to_breaker(r) for r in rows]


@dataclass(frozen=True)
class BreakerRow:
    """A breaker as the API, the CLI and the portal list it."""

    breaker: Breaker
    last_reason: str
    updated_at: datetime
    waiting: list[tuple[str, str, datetime]]
    """(run id, step name, since) of the runs waiting on it."""


def list_breakers(sessions: sessionmaker[Session], tenant: str | None = None) -> list[BreakerRow]:
    with transaction(sessions) as s:
        q = select(CircuitBreakerState).order_by(CircuitBreakerState.tenant_id, CircuitBreakerState.dependency,
                                                 CircuitBreakerState.failure_class)
        if tenant is not None:
            q = q.where(CircuitBreakerState.tenant_id == tenant)
        rows = s.scalars(q).all()
        waits: dict[int, list[tuple[str, str, datetime]]] = {}
        if rows:
            for w in s.scalars(select(CircuitBreakerWait).where(
                    CircuitBreakerWait.breaker_id.in_([r.id for r in rows])).order_by(CircuitBreakerWait.since)):
                waits.setdefault(w.breaker_id, []).append((w.run_id, w.step_name, w.since))
        return [BreakerRow(to_breaker(r), r.last_reason, r.updated_at, waits.get(r.id, [])) for r in rows]


def set_waiting(sessions: sessionmaker[Session], key: BreakerKey, run_id: str, step_name: str) -> float:
    """Note that a run waits on the breaker (idempotent); returns since when (epoch seconds)."""
    with transaction(sessions) as s:
        row = _row(s, key)
        if row is None:
            return utcnow().timestamp()
        since = s.scalars(select(CircuitBreakerWait.since).where(
            CircuitBreakerWait.breaker_id == row.id, CircuitBreakerWait.run_id == run_id)).first()
        if since is None:
            since = utcnow()
            s.add(CircuitBreakerWait(breaker_id=row.id, run_id=run_id, step_name=step_name, since=since))
        return _ts(since) or 0.0


def waited_on(sessions: sessionmaker[Session], run_id: str) -> list[str]:
    """The dependencies of the breakers a run waits on (what its steps were found to need)."""
    with transaction(sessions) as s:
        return list(dict.fromkeys(s.scalars(
            select(CircuitBreakerState.dependency).join(CircuitBreakerWait,
                                                        CircuitBreakerWait.breaker_id == CircuitBreakerState.id)
            .where(CircuitBreakerWait.run_id == run_id).order_by(CircuitBreakerWait.id))))


def waits_of(session: Session, run_id: str) -> list[str]:
    """The breakers (``tenant/CLASS/dependency``) a run waits on now."""
    rows = session.execute(
        select(CircuitBreakerState.tenant_id, CircuitBreakerState.failure_class, CircuitBreakerState.dependency)
        .join(CircuitBreakerWait, CircuitBreakerWait.breaker_id == CircuitBreakerState.id)
        .where(CircuitBreakerWait.run_id == run_id).order_by(CircuitBreakerWait.id))
    return [f"{t}/{c}/{d}" for t, c, d in rows]


def any_open(sessions: sessionmaker[Session], tenant: str) -> bool:
    """Has the tenant a breaker that is not closed?"""
    with transaction(sessions) as s:
        found = s.scalars(select(CircuitBreakerState.id).where(
            CircuitBreakerState.tenant_id == tenant, CircuitBreakerState.state != "closed").limit(1)).first()
        return found is not None


def needed_by_the_same_step(sessions: sessionmaker[Session], tenant: str, run_id: str, step_name: str) -> list[str]:
    """The dependencies of the tenant's open breakers that runs of the same plan wait on at the same
    step: what this step will need too, before it has failed on it."""
    same_plan = select(BuildRun.plan_id).where(BuildRun.id == run_id).scalar_subquery()
    with transaction(sessions) as s:
        rows = s.scalars(
            select(CircuitBreakerState.dependency).distinct()
            .join(CircuitBreakerWait, CircuitBreakerWait.breaker_id == CircuitBreakerState.id)
            .join(BuildRun, BuildRun.id == CircuitBreakerWait.run_id)
            .where(CircuitBreakerState.tenant_id == tenant, CircuitBreakerState.state != "closed",
                   CircuitBreakerWait.step_name == step_name, CircuitBreakerWait.run_id != run_id,
                   BuildRun.plan_id == same_plan))
        return sorted(rows)


def clear_waiting(sessions: sessionmaker[Session], run_id: str) -> None:
    """The run waits on no breaker any more (it resumed, or ended)."""
    with transaction(sessions) as s:
        s.execute(delete(CircuitBreakerWait).where(CircuitBreakerWait.run_id == run_id))


STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
"""The gauge's reading of a state: higher is worse."""


def gauges(sessions: sessionmaker[Session], now: float) -> dict[tuple[str, str], tuple[int, float]]:
    """Per (class, dependency) over all tenants: the worst state and how long the longest-open
    breaker has been open (0 when none is), for ``/metrics`` (no tenant in the labels)."""
    out: dict[tuple[str, str], tuple[int, float]] = {}
    with transaction(sessions) as s:
        for row in s.scalars(select(CircuitBreakerState)):
            b = to_breaker(row)
            state = STATE_VALUE[b.state]
            open_for = now - b.opened_at if b.state is not BreakerState.CLOSED and b.opened_at else 0.0
            worst, longest = out.get((row.failure_class, row.dependency), (0, 0.0))
            out[(row.failure_class, row.dependency)] = (max(worst, state), max(longest, open_for))
    return out
