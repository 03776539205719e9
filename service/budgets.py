"""Budgets of runs and tenants (seed 002 sections 2 and 3): what the API and the CLI show and set.

The levels are platform -> tenant -> run, per dimension (``domain.budget_settings``). A tenant's
budgets (USD and tokens per day and per month, concurrent runs, its runs' defaults) and a run's
(time, cost, attempts) are stored in ``mb_v4_budget_settings``; the ledgers (limit, reserved,
spent) in ``mb_v4_run_budget``; each LLM call and step attempt in ``mb_v4_cost_records``.

:func:`remaining` is the seam for model selection and the SLA monitor: what is left of a run's
and its tenant's budgets, per dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.budget_settings import (
    CONCURRENT_RUNS,
    BudgetSettings,
    effective_run_budget,
    parse_run_budget,
    parse_tenant_budget,
    tenant_periods,
)
from metabuilder.domain.budgets import Dimension, Ledger
from metabuilder.service.errors import BadRequest
from metabuilder.service.tenancy import own_run, own_tenant
from metabuilder.store import budgets as ledgers
from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction


def _ledger_out(ledger: Ledger | None, limit: float | None) -> dict[str, Any]:
    """One dimension as the API shows it: the limit the settings give now, reserved, spent, left."""
    reserved, spent = (ledger.reserved, ledger.spent) if ledger else (0.0, 0.0)
    left = None if limit is None else max(limit - reserved - spent, 0.0)
    return {"limit": limit, "reserved": round(reserved, 9), "spent": round(spent, 9),
            "available": None if left is None else round(left, 9)}


def run_budget(session: Session, platform: BudgetSettings, run_id: str, *, tenant: str | None) -> dict[str, Any]:
    """A run's budget: per dimension its limit (and which level set it), reserved and spent; the
    sums of its metering records; its open reservations."""
    run = own_run(session, run_id, tenant)
    settings = ledgers.budget_settings(session, "run", run_id)
    effective = effective_run_budget(platform, ledgers.budget_settings(session, "tenant", run.tenant_id),
                                     settings)  # type: ignore[arg-type]
    held = ledgers.ledger_views(session, "run", run_id)
    limits: dict[Dimension, float | None] = {Dimension.TOKENS: None, **effective.limits}
    dims = {d.value: {**_ledger_out(held.get(d), limits.get(d)), "source": effective.sources.get(d, "metered")}
            for d in Dimension}
    return {"run_id": run_id, "tenant": run.tenant_id, "overrides": settings, "dimensions": dims,
            "records": ledgers.cost_totals(session, run_id=run_id),
            "open_reservations": ledgers.open_reservations(session, run_id=run_id)}


def tenant_budget(session: Session, platform: BudgetSettings, tenant_id: str, *, tenant: str | None,
                  at: datetime | None = None) -> dict[str, Any]:
    """A tenant's budget now: its settings, and for today and this month each dimension's limit,
    reserved and spent; the sums of all its metering records."""
    tenant_id = own_tenant(tenant_id, tenant)
    settings = ledgers.budget_settings(session, "tenant", tenant_id)
    periods = {}
    for period, limits in tenant_periods(settings, at or datetime.now(UTC)).items():
        held = ledgers.ledger_views(session, "tenant", tenant_id, period)
        periods[period] = {d.value: _ledger_out(held.get(d), limits[d]) for d in limits}
    return {"tenant": tenant_id, "settings": settings, "concurrent_runs": settings.get(CONCURRENT_RUNS),
            "run_defaults": {d.value: v for d, v in effective_run_budget(platform, settings).limits.items()},
            "periods": periods, "records": ledgers.cost_totals(session, tenant_id=tenant_id),
            "open_reservations": ledgers.open_reservations(session, tenant_id=tenant_id)}


def change_tenant_budget(session: Session, platform: BudgetSettings, tenant_id: str, changes: Mapping[str, object],
                         *, merge: bool, where: str, tenant: str | None, actor: str) -> dict[str, Any]:
    """Set (or with ``merge`` change) a tenant's budgets; ``{}`` goes back to the platform's."""
    tenant_id = own_tenant(tenant_id, tenant)
    try:
        parsed = parse_tenant_budget(changes, where)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    before = ledgers.budget_settings(session, "tenant", tenant_id)
    after = {**before, **parsed} if merge else parsed
    ledgers.set_budget_settings(session, "tenant", tenant_id, tenant_id, after)
    write_audit(session, "settings.tenant_budget_changed", tenant=tenant_id, actor=actor,
                target=f"tenant:{tenant_id}/budget", before=before, after=after)
    return tenant_budget(session, platform, tenant_id, tenant=tenant_id)


def change_run_budget(session: Session, platform: BudgetSettings, run_id: str, changes: Mapping[str, object], *,
                      merge: bool, where: str, tenant: str | None, actor: str) -> dict[str, Any]:
    """Set (or with ``merge`` change) a run's own budget (time, cost, attempts); it applies from
    the run's next reservation or step on."""
    run = own_run(session, run_id, tenant)
    try:
        parsed = parse_run_budget(changes, where)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    before = ledgers.budget_settings(session, "run", run_id)
    after = {**before, **parsed} if merge else parsed
    ledgers.set_budget_settings(session, "run", run_id, run.tenant_id, after)
    write_audit(session, "settings.run_budget_changed", tenant=run.tenant_id, actor=actor,
                target=f"run:{run_id}/budget", run_id=run_id, before=before, after=after)
    return run_budget(session, platform, run_id, tenant=tenant)


def tenant_concurrent_runs(sessions: sessionmaker[Session], tenant_id: str, platform_limit: int) -> int:
    """The runs a tenant may have open at once: its budget's ``concurrent_runs``, else the platform's."""
    with transaction(sessions) as session:
        value = ledgers.budget_settings(session, "tenant", tenant_id).get(CONCURRENT_RUNS)
    return value if isinstance(value, int) else platform_limit


def remaining(sessions: sessionmaker[Session], platform: BudgetSettings, run_id: str, tenant_id: str,
              at: datetime | None = None) -> ledgers.Remaining:
    """The seam for model selection and the SLA monitor: what a run may still reserve, and its
    tenant (``store.budgets.remaining``, which the worker's activities call directly)."""
    return ledgers.remaining(sessions, platform, run_id, tenant_id, at)
