"""The V4 run panel (seed 002's UI): what the portal's run page shows of a run's budget, repair
timeline, circuit breakers, confidence and canary. Each part is read from the data that exists;
a part without data says so (``configured`` False, or empty) rather than showing zeros."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.domain.budgets import Dimension, Ledger
from metabuilder.service.timeline import TimelineEvent, run_timeline
from metabuilder.store import canary as canary_rows
from metabuilder.store.models import BudgetLedgerRow, BuildRun, CircuitBreakerState, CircuitBreakerWait

BUDGET_ORDER = (Dimension.COST, Dimension.TIME, Dimension.ATTEMPTS, Dimension.TOKENS)
REPAIR_KINDS = ("autofix.", "plan.changed", "gate.", "breaker.", "budget.", "chaos.")
"""Timeline events the repair timeline shows (steps starting and ending are in the steps table)."""


@dataclass(frozen=True)
class BudgetBar:
    dimension: str
    limit: float | None
    """None: metered only."""
    reserved: float
    spent: float
    source: str | None = None
    """The level the limit comes from (platform, tenant, run), as the budget API says."""

    @property
    def percent(self) -> float | None:
        """Spent and reserved over the limit, in percent, at most 100 for drawing (None: no limit)."""
        fraction = Ledger(self.limit, self.reserved, self.spent).used_fraction
        return None if fraction is None else round(min(1.0, fraction) * 100, 1)

    @property
    def over(self) -> bool:
        return self.limit is not None and self.reserved + self.spent > self.limit


@dataclass(frozen=True)
class BreakerLine:
    name: str
    """``CLASS/dependency``."""
    state: str
    trips: int
    waiting: bool
    """This run waits on it now."""


@dataclass(frozen=True)
class RunPanel:
    budget: list[BudgetBar]
    """The run's budget ledgers ([]: no budget applies to the run, or budgets are not installed)."""
    repairs: list[TimelineEvent]
    breakers: list[BreakerLine]
    """The tenant's breakers that are not closed, and those this run waits on."""
    canary: str | None = None
    """The Worker Deployment version (build id) the run is pinned to (None: an unversioned worker ran it)."""
    notes: dict[str, str] = field(default_factory=dict)


def run_panel(session: Session, run: BuildRun, limits: Mapping[str, Mapping[str, Any]] | None = None) -> RunPanel:
    """The panel of ``run`` (already checked to be the caller's tenant's). ``limits``: the run
    budget's dimensions as ``service.budgets.run_budget`` gives them (limit and source); a ledger
    without a limit of its own (a dimension metered, never reserved against) shows that limit."""
    limits = limits or {}
    rows = session.scalars(select(BudgetLedgerRow).where(BudgetLedgerRow.scope == "run",
                                                         BudgetLedgerRow.scope_id == run.id)).all()
    by_dim = {r.dimension: r for r in rows}
    order = [d.value for d in BUDGET_ORDER] + sorted(set(by_dim) - {d.value for d in BUDGET_ORDER})
    budget = [_bar(d, by_dim[d], limits.get(d, {})) for d in order if d in by_dim]
    repairs = [e for e in run_timeline(session, run.id, run.tenant_id) if e.kind.startswith(REPAIR_KINDS)]
    waiting = set(session.scalars(select(CircuitBreakerWait.breaker_id).where(CircuitBreakerWait.run_id == run.id)))
    breakers = [BreakerLine(f"{b.failure_class}/{b.dependency}", b.state, b.trips, b.id in waiting)
                for b in session.scalars(select(CircuitBreakerState).where(
                    CircuitBreakerState.tenant_id == run.tenant_id)
                    .order_by(CircuitBreakerState.failure_class, CircuitBreakerState.dependency))
                if b.state != "closed" or b.id in waiting]
    return RunPanel(budget=budget, repairs=repairs, breakers=breakers,
                    canary=canary_rows.run_version(session, run.id))


def _bar(dimension: str, ledger: BudgetLedgerRow, settings: Mapping[str, Any]) -> BudgetBar:
    """A ledger's line: its own limit (what its reservations were checked against), else the one
    the settings give now; the level is named only when the limit shown is the settings' one."""
    limit = ledger.limit_value if ledger.limit_value is not None else settings.get("limit")
    level = settings.get("source") if limit is not None and limit == settings.get("limit") else None
    return BudgetBar(dimension, limit, max(0.0, ledger.reserved), ledger.spent,
                     None if level == "metered" else level)
