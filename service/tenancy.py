"""Reads scoped to the caller's tenant: another tenant's row is as unknown as a missing one, so
that ids do not leak. ``tenant=None`` is a caller who sees every tenant (the CLI, run by an
operator on the deployment's own machine)."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.orm import Session

from metabuilder.service.errors import NotFound
from metabuilder.store import approvals
from metabuilder.store import plans as plan_rows
from metabuilder.store import runs as run_rows
from metabuilder.store.models import ApprovalGate, BuildRun, ScaffoldPlan

Owned = TypeVar("Owned", BuildRun, ScaffoldPlan, ApprovalGate)


def own_run(session: Session, run_id: str, tenant: str | None) -> BuildRun:
    """The run ``run_id`` of ``tenant``; ``NotFound`` otherwise."""
    return _owned(run_rows.get_run(session, run_id), tenant, f"unknown run id {run_id!r}")


def own_plan(session: Session, plan_id: str, tenant: str | None) -> ScaffoldPlan:
    """The stored plan ``plan_id`` of ``tenant``; ``NotFound`` otherwise."""
    return _owned(plan_rows.get_plan(session, plan_id), tenant, f"unknown plan id {plan_id!r}")


def own_gate(session: Session, gate_id: str, tenant: str | None) -> ApprovalGate:
    """The approval gate ``gate_id`` of ``tenant``; ``NotFound`` otherwise."""
    return _owned(approvals.get_gate(session, gate_id), tenant, f"unknown gate {gate_id!r}")


def own_tenant(tenant_id: str, tenant: str | None) -> str:
    """``tenant_id`` when the caller may see it (it is the caller's own); ``NotFound`` otherwise."""
    if tenant is not None and tenant_id != tenant:
        raise NotFound(f"unknown tenant {tenant_id!r}")
    return tenant_id


def _owned(row: Owned | None, tenant: str | None, unknown: str) -> Owned:
    if row is None or (tenant is not None and row.tenant_id != tenant):
        raise NotFound(unknown)
    return row
