"""Budget ledgers in ``mb_v4_run_budget`` and the reservations against them.

A reservation is one transaction: every ledger it touches is taken with a conditional
``UPDATE ... SET reserved = reserved + :amount WHERE limit is unset OR what is left covers it``.
On PostgreSQL the update locks the row and re-checks the condition on the latest committed
value, so two runs of one tenant cannot both take the last dollar; SQLite has one writer at a
time. Rows are locked in id order, so concurrent reservations cannot deadlock. If any ledger
is short, nothing is reserved.

Why rows and not an entity workflow per tenant taking Updates: the ledger is what the API, the
CLI and ``/metrics`` read anyway, one conditional update is a single round trip where an
Update is a workflow task on another worker, and a tenant's workflow would serialize every
reservation of that tenant through one history that needs continue-as-new. The row lock
serializes only writers of the same ledger.

Reservations are keyed by the caller's idempotency key, so an activity retried after its
worker died neither reserves twice nor settles twice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.budget_settings import BudgetSettings, effective_run_budget, tenant_periods
from metabuilder.domain.budgets import Dimension, Ledger, Shortfall
from metabuilder.store.db import transaction
from metabuilder.store.models import BudgetLedgerRow, BudgetReservationRow, BudgetSettingsRow, CostRecordRow, utcnow
from metabuilder.store.rows import upsert

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class LedgerScope:
    """Which budget: a run's (``period`` empty) or a tenant's for one day or month."""

    scope: str
    scope_id: str
    tenant_id: str
    period: str = ""
    limits: Mapping[Dimension, float | None] | None = None
    """The limits to hold this budget to; a dimension not named keeps the row's limit (None if new)."""

    @classmethod
    def run(cls, run_id: str, tenant_id: str, limits: Mapping[Dimension, float | None] | None = None) -> LedgerScope:
        return cls("run", run_id, tenant_id, "", limits)

    @classmethod
    def tenant(cls, tenant_id: str, period: str,
               limits: Mapping[Dimension, float | None] | None = None) -> LedgerScope:
        return cls("tenant", tenant_id, tenant_id, period, limits)


class _Short(Exception):
    def __init__(self, shortfall: Shortfall) -> None:
        self.shortfall = shortfall


LEDGER_KEY = ("scope", "scope_id", "period", "dimension")


def _ledger_row(s: Session, where: LedgerScope, dimension: Dimension) -> BudgetLedgerRow:
    """The row of one dimension of a budget, created (metered only, or at the given limit) if new."""
    stmt = select(BudgetLedgerRow).where(
        BudgetLedgerRow.scope == where.scope, BudgetLedgerRow.scope_id == where.scope_id,
        BudgetLedgerRow.period == where.period, BudgetLedgerRow.dimension == str(dimension))
    row = s.scalars(stmt).one_or_none()
    limit = (where.limits or {}).get(dimension)
    if row is None:  # ON CONFLICT DO NOTHING: another writer may create it at the same moment
        upsert(s, BudgetLedgerRow, {"scope": where.scope, "scope_id": where.scope_id, "tenant_id": where.tenant_id,
                                    "period": where.period, "dimension": str(dimension), "limit_value": limit,
                                    "reserved": 0.0, "spent": 0.0, "updated_at": utcnow()},
               keys=("scope", "scope_id", "period", "dimension"), update=())
        row = s.scalars(stmt).one()
    if where.limits is not None and dimension in where.limits and row.limit_value != limit:
        row.limit_value = limit
        row.updated_at = utcnow()
        s.flush()
    return row


def reserve(sessions: sessionmaker[Session], reservation_id: str, *, run_id: str, tenant_id: str,
            scopes: Sequence[LedgerScope], amounts: Mapping[Dimension, float]) -> Shortfall | None:
    """Reserve ``amounts`` against every budget in ``scopes``, all or nothing.

    Returns None when reserved (or already reserved under this id), else the first shortfall.
    """
    try:
        with transaction(sessions) as s:
            targets = [(where, _ledger_row(s, where, dim), amount)
                       for where in scopes for dim, amount in amounts.items()]
            # The reservation row first: a retry (or a concurrent twin) of the same id waits for
            # the first to commit and then reserves nothing.
            if not upsert(s, BudgetReservationRow,
                          {"id": reservation_id, "run_id": run_id, "tenant_id": tenant_id,
                           "ledger_ids": [row.id for _, row, _ in targets], "state": "reserved",
                           "amounts": {str(d): float(a) for d, a in amounts.items()}, "created_at": utcnow()},
                          keys=("id",), update=()):
                return None
            for where, row, amount in sorted(targets, key=lambda t: t[1].id):
                if amount <= 0:
                    continue
                done = s.execute(
                    update(BudgetLedgerRow)
                    .where(BudgetLedgerRow.id == row.id,
                           (BudgetLedgerRow.limit_value.is_(None))
                           | (BudgetLedgerRow.limit_value - BudgetLedgerRow.reserved - BudgetLedgerRow.spent
                              >= amount - _EPSILON))
                    .values(reserved=BudgetLedgerRow.reserved + amount, updated_at=utcnow())
                    .execution_options(synchronize_session=False))
                if done.rowcount == 0:  # type: ignore[attr-defined]
                    s.refresh(row)
                    raise _Short(Shortfall(where.scope, Dimension(row.dimension), amount, _ledger(row).available))
    except _Short as short:
        return short.shortfall
    return None


def settle(sessions: sessionmaker[Session], reservation_id: str, actual: Mapping[Dimension, float]) -> bool:
    """Release the reservation and spend ``actual`` on the same ledgers; False if unknown or settled."""
    with transaction(sessions) as s:
        return _settle(s, reservation_id, actual)


def _settle(s: Session, reservation_id: str, actual: Mapping[Dimension, float]) -> bool:
    res = s.get(BudgetReservationRow, reservation_id, with_for_update=True)
    if res is None or res.state != "reserved":
        return False
    rows = s.scalars(select(BudgetLedgerRow).where(BudgetLedgerRow.id.in_(res.ledger_ids))
                     .order_by(BudgetLedgerRow.id)).all()
    for row in rows:
        reserved = float(res.amounts.get(row.dimension, 0.0))
        spent = float(actual.get(Dimension(row.dimension), 0.0))
        s.execute(update(BudgetLedgerRow).where(BudgetLedgerRow.id == row.id)
                  .values(reserved=BudgetLedgerRow.reserved - reserved, spent=BudgetLedgerRow.spent + spent,
                          updated_at=utcnow())
                  .execution_options(synchronize_session=False))
    res.state, res.actual, res.settled_at = "settled", {str(d): float(a) for d, a in actual.items()}, utcnow()
    return True


def release_run(sessions: sessionmaker[Session], run_id: str) -> int:
    """Settle every open reservation of an ended run at zero spend; how many there were."""
    with transaction(sessions) as s:
        open_ids = s.scalars(select(BudgetReservationRow.id).where(
            BudgetReservationRow.run_id == run_id, BudgetReservationRow.state == "reserved")).all()
    for reservation_id in open_ids:
        settle(sessions, reservation_id, {})
    return len(open_ids)


def _ledger(row: BudgetLedgerRow) -> Ledger:
    return Ledger(row.limit_value, reserved=max(0.0, row.reserved), spent=row.spent)


def ledgers(sessions: sessionmaker[Session], scope: str, scope_id: str, period: str = "") -> dict[Dimension, Ledger]:
    """The ledgers of one budget, by dimension (dimensions never touched are absent)."""
    with transaction(sessions) as s:
        rows = s.scalars(select(BudgetLedgerRow).where(
            BudgetLedgerRow.scope == scope, BudgetLedgerRow.scope_id == scope_id,
            BudgetLedgerRow.period == period)).all()
        return {Dimension(r.dimension): _ledger(r) for r in rows}


@dataclass(frozen=True, slots=True)
class CostRecord:
    """What one LLM call or one step attempt used and cost (``mb_v4_cost_records``)."""

    id: str
    """The idempotency key: a retried activity that meters the same thing again adds nothing."""
    run_id: str
    tenant_id: str
    kind: str
    """``llm`` or ``step``."""
    step_name: str = ""
    pool: str = ""
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cost_usd: float = 0.0
    reservation_id: str | None = None


def meter(sessions: sessionmaker[Session], record: CostRecord,
          spends: Sequence[tuple[LedgerScope, Mapping[Dimension, float]]]) -> bool:
    """Write ``record`` and spend what it used, in one transaction and once per record id:
    against its reservation when that is still open (settling it, with the amounts of the first
    spend), else straight on each scope's ledgers. False when the record was written before
    (nothing is spent again)."""
    with transaction(sessions) as s:
        return _meter(s, record, spends)


def meter_run(sessions: sessionmaker[Session], platform: BudgetSettings, record: CostRecord, at: datetime,
              run_amounts: Mapping[Dimension, float], tenant_amounts: Mapping[Dimension, float]) -> bool:
    """:func:`meter` on the run's budget and its tenant's (:func:`run_scopes`), in one transaction."""
    with transaction(sessions) as s:
        return meter_run_in(s, platform, record, at, run_amounts, tenant_amounts)


def meter_run_in(s: Session, platform: BudgetSettings, record: CostRecord, at: datetime,
                 run_amounts: Mapping[Dimension, float], tenant_amounts: Mapping[Dimension, float]) -> bool:
    """:func:`meter_run` within the caller's transaction (a step's final row carries it)."""
    run, tenants = _run_scopes(s, platform, record.run_id, record.tenant_id, at)
    spends = [(run, run_amounts), *((t, tenant_amounts) for t in tenants if any(tenant_amounts.values()))]
    return _meter(s, record, spends)


def _meter(s: Session, record: CostRecord, spends: Sequence[tuple[LedgerScope, Mapping[Dimension, float]]]) -> bool:
    if not upsert(s, CostRecordRow, {**asdict(record), "created_at": utcnow()}, keys=("id",), update=()):
        return False
    if record.reservation_id is not None and spends and _settle(s, record.reservation_id, spends[0][1]):
        return True
    # One statement a ledger: made if new, its spend added, its limit set to what the settings say
    # now; in the ledgers' key order, so that concurrent spenders take their row locks alike.
    now = utcnow()
    for where, dim, amount in sorted(((w, d, a) for w, amounts in spends for d, a in amounts.items()),
                                     key=lambda t: (t[0].scope, t[0].scope_id, t[0].period, str(t[1]))):
        limited = where.limits is not None and dim in where.limits
        upsert(s, BudgetLedgerRow, {"scope": where.scope, "scope_id": where.scope_id, "tenant_id": where.tenant_id,
                                    "period": where.period, "dimension": str(dim),
                                    "limit_value": (where.limits or {}).get(dim), "reserved": 0.0,
                                    "spent": float(amount), "updated_at": now},
               keys=LEDGER_KEY, update=("updated_at", "limit_value") if limited else ("updated_at",), add=("spent",))
    return True


def open_ledgers(sessions: sessionmaker[Session], scopes: Sequence[LedgerScope],
                 dimensions: Sequence[Dimension]) -> None:
    """Create (or re-limit, for dimensions ``scopes`` name limits for) the ledgers of ``scopes``."""
    with transaction(sessions) as s:
        for where in scopes:
            for dim in dimensions:
                _ledger_row(s, where, dim)


def cost_totals(session: Session, *, run_id: str | None = None, tenant_id: str | None = None) -> dict[str, float]:
    """The sums of the metering records of a run or a tenant: cost, tokens in and out, CPU and
    wall seconds, and how many LLM calls and step attempts they are."""
    stmt = select(func.coalesce(func.sum(CostRecordRow.cost_usd), 0.0),
                  func.coalesce(func.sum(CostRecordRow.tokens_in), 0),
                  func.coalesce(func.sum(CostRecordRow.tokens_out), 0),
                  func.coalesce(func.sum(CostRecordRow.cpu_seconds), 0.0),
                  func.coalesce(func.sum(CostRecordRow.wall_seconds), 0.0),
                  func.count(CostRecordRow.id).filter(CostRecordRow.kind == "llm"),
                  func.count(CostRecordRow.id).filter(CostRecordRow.kind == "step"))
    if run_id is not None:
        stmt = stmt.where(CostRecordRow.run_id == run_id)
    if tenant_id is not None:
        stmt = stmt.where(CostRecordRow.tenant_id == tenant_id)
    cost, tin, tout, cpu, wall, calls, steps = session.execute(stmt).one()
    return {"cost_usd": float(cost), "tokens_in": int(tin), "tokens_out": int(tout), "cpu_seconds": float(cpu),
            "wall_seconds": float(wall), "llm_calls": int(calls), "step_attempts": int(steps)}


def budget_settings(session: Session, scope: str, scope_id: str) -> dict[str, Any]:
    """A tenant's (``scope`` tenant) or a run's (``scope`` run) budget settings; empty: none set."""
    row = session.get(BudgetSettingsRow, (scope, scope_id))
    return dict(row.settings) if row else {}


def set_budget_settings(session: Session, scope: str, scope_id: str, tenant_id: str, settings: dict[str, Any]) -> None:
    upsert(session, BudgetSettingsRow, {"scope": scope, "scope_id": scope_id, "tenant_id": tenant_id,
                                        "settings": settings, "updated_at": utcnow()},
           keys=("scope", "scope_id"), update=("settings", "updated_at"))


def run_scopes(sessions: sessionmaker[Session], platform: BudgetSettings, run_id: str, tenant_id: str,
               at: datetime) -> tuple[LedgerScope, list[LedgerScope]]:
    """The budgets a run's spending counts against, with their limits as the settings now say:
    the run's (platform -> tenant -> run) and its tenant's for the day and the month of ``at``."""
    with transaction(sessions) as s:
        return _run_scopes(s, platform, run_id, tenant_id, at)


def _run_scopes(s: Session, platform: BudgetSettings, run_id: str, tenant_id: str,
                at: datetime) -> tuple[LedgerScope, list[LedgerScope]]:
    tenant = budget_settings(s, "tenant", tenant_id)
    effective = effective_run_budget(platform, tenant, budget_settings(s, "run", run_id))  # type: ignore[arg-type]
    tenants = [LedgerScope.tenant(tenant_id, period, limits)
               for period, limits in tenant_periods(tenant, at).items()]
    return LedgerScope.run(run_id, tenant_id, effective.limits), tenants


def ledger_views(session: Session, scope: str, scope_id: str, period: str = "") -> dict[Dimension, Ledger]:
    """:func:`ledgers` within the caller's session."""
    rows = session.scalars(select(BudgetLedgerRow).where(
        BudgetLedgerRow.scope == scope, BudgetLedgerRow.scope_id == scope_id, BudgetLedgerRow.period == period)).all()
    return {Dimension(r.dimension): _ledger(r) for r in rows}


def held(sessions: sessionmaker[Session], reservation_id: str) -> dict[Dimension, float]:
    """What a reservation still holds (nothing once it is settled, or for an unknown id)."""
    with transaction(sessions) as s:
        row = s.get(BudgetReservationRow, reservation_id)
        if row is None or row.state != "reserved":
            return {}
        return {Dimension(d): float(v) for d, v in row.amounts.items()}


def open_reservations(session: Session, *, run_id: str | None = None, tenant_id: str | None = None) -> int:
    stmt = select(func.count(BudgetReservationRow.id)).where(BudgetReservationRow.state == "reserved")
    if run_id is not None:
        stmt = stmt.where(BudgetReservationRow.run_id == run_id)
    if tenant_id is not None:
        stmt = stmt.where(BudgetReservationRow.tenant_id == tenant_id)
    return int(session.execute(stmt).scalar_one())


@dataclass(frozen=True)
class Remaining:
    """What is left of a run's budget and its tenant's, per dimension (``math.inf``: no limit)."""

    run: dict[Dimension, float]
    tenant: dict[Dimension, float]

    def of(self, dimension: Dimension) -> float:
        """The tighter of the two."""
        return min(self.run.get(dimension, math.inf), self.tenant.get(dimension, math.inf))


def remaining(sessions: sessionmaker[Session], platform: BudgetSettings, run_id: str, tenant_id: str,
              at: datetime | None = None) -> Remaining:
    """The seam for model selection and the SLA monitor: what a run may still reserve, and its
    tenant (the tighter of the day's and the month's ledger), with the limits the settings give now."""
    run_scope, tenant_scopes = run_scopes(sessions, platform, run_id, tenant_id, at or datetime.now(UTC))
    with transaction(sessions) as session:
        held = ledger_views(session, "run", run_id)
        run_left = {d: Ledger(limit, held[d].reserved if d in held else 0.0,
                              held[d].spent if d in held else 0.0).available
                    for d, limit in (run_scope.limits or {}).items()}
        tenant_left: dict[Dimension, float] = {}
        for scope in tenant_scopes:
            t_held = ledger_views(session, "tenant", tenant_id, scope.period)
            for d, limit in (scope.limits or {}).items():
                left = Ledger(limit, t_held[d].reserved if d in t_held else 0.0,
                              t_held[d].spent if d in t_held else 0.0).available
                tenant_left[d] = min(tenant_left.get(d, math.inf), left)
    return Remaining(run=run_left, tenant=tenant_left)
