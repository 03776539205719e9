"""Budgets of runs and tenants (v4): limit, reserved and spent per dimension, and the levels that
set them (platform -> tenant -> run). See ``service.budgets``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from metabuilder.api.deps import Admin, ConfigDep, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.schemas import Strict
from metabuilder.service import budgets as service

V4 = "/api/meta/v4"
router = APIRouter(tags=["budgets"])
READ = responses(401, 403, 404, 422)


class LedgerOut(BaseModel):
    limit: float | None = Field(description="null: no limit (the dimension is only metered).")
    reserved: float = Field(description="Held by work in flight (an LLM call's worst case).")
    spent: float
    available: float | None = Field(description="limit - reserved - spent (never below 0); null: no limit.")
    source: str | None = Field(default=None, description="Which level set the limit: platform, tenant, run "
                                                         "(metered: no level limits it).")


class RunBudgetOut(BaseModel):
    run_id: str
    tenant: str
    overrides: dict[str, float | None] = Field(description="The run's own limits (PUT .../runs/{id}/budget).")
    dimensions: dict[str, LedgerOut] = Field(description="time_seconds, cost_usd, tokens, attempts.")
    records: dict[str, float] = Field(description="Sums of the run's metering records (LLM calls, step attempts).")
    open_reservations: int


class TenantBudgetOut(BaseModel):
    tenant: str
    settings: dict[str, Any]
    concurrent_runs: int | None = Field(description="Runs the tenant may have open at once; null: the platform's.")
    run_defaults: dict[str, float | None] = Field(description="Its runs' limits unless a run sets its own.")
    periods: dict[str, dict[str, LedgerOut]] = Field(description="Today's (YYYY-MM-DD) and this month's (YYYY-MM) "
                                                                 "ledgers: cost_usd and tokens.")
    records: dict[str, float] = Field(description="Sums of all the tenant's metering records.")
    open_reservations: int


class RunBudgetIn(Strict):
    time_seconds: float | None = Field(default=None, ge=0, description="Step wall time the run may use.")
    cost_usd: float | None = Field(default=None, ge=0, description="Money the run may spend (LLM and CPU).")
    attempts: float | None = Field(default=None, ge=0, description="Step executions the run may make.")


class RunDefaultsIn(RunBudgetIn):
    pass


class TenantBudgetIn(Strict):
    cost_usd_per_day: float | None = Field(default=None, ge=0)
    cost_usd_per_month: float | None = Field(default=None, ge=0)
    tokens_per_day: float | None = Field(default=None, ge=0)
    tokens_per_month: float | None = Field(default=None, ge=0)
    concurrent_runs: int | None = Field(default=None, ge=1)
    run: RunDefaultsIn | None = Field(default=None, description="The defaults of the tenant's runs' budgets.")


@router.get(V4 + "/runs/{run_id}/budget", responses=READ)
def get_run_budget(run_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> RunBudgetOut:
    """A run's budget: per dimension its limit and the level it came from, reserved and spent."""
    return RunBudgetOut(**service.run_budget(session, config.budgets, run_id, tenant=principal.tenant))


@router.put(V4 + "/runs/{run_id}/budget", responses=READ)
def replace_run_budget(run_id: str, body: RunBudgetIn, principal: Admin, session: SessionDep,
                       config: ConfigDep) -> RunBudgetOut:
    """Set the run's own limits (a key given as null: no limit at the run's level; absent: the
    tenant's or platform's); they apply from the run's next reservation or step on."""
    return RunBudgetOut(**service.change_run_budget(
        session, config.budgets, run_id, body.model_dump(exclude_unset=True), merge=False, where="body",
        tenant=principal.tenant, actor=principal.user))


@router.get(V4 + "/tenants/{tenant_id}/budget", responses=READ)
def get_tenant_budget(tenant_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> TenantBudgetOut:
    """A tenant's budgets and today's and this month's ledgers."""
    return TenantBudgetOut(**service.tenant_budget(session, config.budgets, tenant_id, tenant=principal.tenant))


@router.put(V4 + "/tenants/{tenant_id}/budget", responses=READ)
def replace_tenant_budget(tenant_id: str, body: TenantBudgetIn, principal: Admin, session: SessionDep,
                          config: ConfigDep) -> TenantBudgetOut:
    """Set the tenant's budgets (``{}``: none; the platform's run defaults apply)."""
    return TenantBudgetOut(**service.change_tenant_budget(
        session, config.budgets, tenant_id, body.model_dump(exclude_unset=True), merge=False, where="body",
        tenant=principal.tenant, actor=principal.user))
