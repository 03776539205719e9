"""Auto-fix settings at each level (seed 001: platform -> tenant -> run): reading and changing a
tenant's overrides, and the overrides a run's retries start with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from metabuilder.domain.policy import AutofixSettings, EffectiveSettings, effective_settings, parse_overrides
from metabuilder.service.tenancy import own_run, own_tenant
from metabuilder.store import runs as run_rows
from metabuilder.store import tenants as tenant_rows
from metabuilder.store.audit import write_audit
from metabuilder.store.models import BuildRun


@dataclass(frozen=True)
class TenantAutofix:
    """A tenant's own overrides and the settings its runs get from them and the platform."""

    tenant: str
    overrides: dict[str, Any]
    """What the tenant sets (empty: the platform's values apply)."""
    effective: EffectiveSettings
    """Each setting's value and the level (platform or tenant) it comes from."""


def tenant_settings(session: Session, platform: AutofixSettings, tenant_id: str,
                    *, tenant: str | None) -> TenantAutofix:
    """The auto-fix settings of ``tenant_id``, seen by a caller of ``tenant`` (``NotFound`` for another)."""
    overrides = tenant_rows.tenant_autofix(session, own_tenant(tenant_id, tenant))
    return TenantAutofix(tenant_id, overrides, effective_settings(platform, overrides))


def change_tenant_settings(session: Session, platform: AutofixSettings, tenant_id: str,
                           changes: Mapping[str, object], *, merge: bool, where: str,
                           tenant: str | None, actor: str) -> TenantAutofix:
    """Set the tenant's overrides to ``changes`` (``{}`` resets it to the platform's values), or,
    with ``merge``, change those and keep the others. A bad value is a ``PolicyError`` naming
    ``where`` (``--set``, ``body``) and the setting."""
    tenant_id = own_tenant(tenant_id, tenant)
    parsed = parse_overrides(changes, where)
    before = tenant_rows.tenant_autofix(session, tenant_id)
    overrides = {**before, **parsed} if merge else parsed
    tenant_rows.set_tenant_autofix(session, tenant_id, overrides)
    write_audit(session, "settings.tenant_changed", tenant=tenant_id, actor=actor, target=f"tenant:{tenant_id}/autofix",
                before=before, after=overrides)
    return TenantAutofix(tenant_id, overrides, effective_settings(platform, overrides))


def change_run_overrides(session: Session, run_id: str, changes: Mapping[str, object], *, merge: bool,
                         where: str, tenant: str | None, actor: str) -> BuildRun:
    """Set (or, with ``merge``, change) the run-level overrides that the run's retries start with;
    the run itself keeps the settings it started with."""
    run = own_run(session, run_id, tenant)
    parsed = parse_overrides(changes, where)
    before = dict(run.next_overrides)
    run_rows.set_next_overrides(session, run, {**before, **parsed} if merge else parsed)
    write_audit(session, "settings.run_changed", tenant=run.tenant_id, actor=actor, target=f"run:{run.id}/settings",
                run_id=run.id, before=before, after=dict(run.next_overrides))
    return run
