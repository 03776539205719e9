"""Auto-fix settings of a tenant and of a run (seed 001: platform -> tenant -> run)."""

from __future__ import annotations

from fastapi import APIRouter

from metabuilder.api.deps import Admin, ConfigDep, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V2, V3
from metabuilder.api.routes.views import own_run
from metabuilder.api.schemas import RunSettingsOut, SettingsIn, TenantSettingsOut
from metabuilder.api.settings_body import api_names, overrides_of, values_of
from metabuilder.domain.access import Principal
from metabuilder.domain.policy import effective_settings, parse_overrides
from metabuilder.service.errors import NotFound
from metabuilder.store import tenants as tenant_rows
from metabuilder.store.models import BuildRun

router = APIRouter(tags=["settings"])
READ = responses(401, 403, 404, 422)


def _tenant(tenant_id: str, principal: Principal) -> str:
    if tenant_id != principal.tenant:
        raise NotFound(f"unknown tenant {tenant_id!r}")
    return tenant_id


def _tenant_out(session: SessionDep, config: ConfigDep, tenant_id: str) -> TenantSettingsOut:
    overrides = tenant_rows.tenant_autofix(session, tenant_id)
    effective = effective_settings(config.platform, overrides)
    return TenantSettingsOut(tenant=tenant_id, effective=values_of(effective.settings),
                             sources=api_names(effective.sources), overrides=api_names(overrides))


@router.get(V2 + "/tenants/{tenant_id}/settings", responses=READ)
@router.get(V3 + "/tenants/{tenant_id}/settings", responses=READ)
def tenant_settings(tenant_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> TenantSettingsOut:
    """The tenant's effective auto-fix settings, where each comes from, and its own overrides."""
    return _tenant_out(session, config, _tenant(tenant_id, principal))


@router.put(V2 + "/tenants/{tenant_id}/settings", responses=READ)
@router.put(V3 + "/tenants/{tenant_id}/settings", responses=READ)
def replace_tenant_settings(tenant_id: str, body: SettingsIn, principal: Admin, session: SessionDep,
                            config: ConfigDep) -> TenantSettingsOut:
    """Replace the tenant's overrides (``{}`` resets the tenant to the platform defaults)."""
    tenant_rows.set_tenant_autofix(session, _tenant(tenant_id, principal), overrides_of(body))
    return _tenant_out(session, config, tenant_id)


@router.post(V2 + "/tenants/{tenant_id}/settings", responses=READ)
@router.post(V3 + "/tenants/{tenant_id}/settings", responses=READ)
def update_tenant_settings(tenant_id: str, body: SettingsIn, principal: Admin, session: SessionDep,
                           config: ConfigDep) -> TenantSettingsOut:
    """Change some of the tenant's overrides, keeping the others (``{"autofix_enabled": false}``)."""
    current = tenant_rows.tenant_autofix(session, _tenant(tenant_id, principal))
    tenant_rows.set_tenant_autofix(session, tenant_id, {**current, **overrides_of(body)})
    return _tenant_out(session, config, tenant_id)


def _run_out(run: BuildRun) -> RunSettingsOut:
    return RunSettingsOut(run_id=run.id, effective=api_names(run.settings),
                          sources=api_names(run.settings.get("sources", {})),
                          next_overrides=api_names(run.next_overrides))


@router.get(V2 + "/runs/{run_id}/settings", responses=READ)
@router.get(V3 + "/runs/{run_id}/settings", responses=READ)
def run_settings(run_id: str, principal: Viewer, session: SessionDep) -> RunSettingsOut:
    """The settings the run runs with (fixed at its start), and the overrides set for its retries."""
    return _run_out(own_run(session, run_id, principal))


def _set_next(session: SessionDep, run_id: str, principal: Principal, body: SettingsIn, merge: bool) -> RunSettingsOut:
    run = own_run(session, run_id, principal)
    changes = parse_overrides(overrides_of(body), "body")
    run.next_overrides = {**run.next_overrides, **changes} if merge else changes
    session.flush()
    return _run_out(run)


@router.put(V2 + "/runs/{run_id}/settings", responses=READ)
@router.put(V3 + "/runs/{run_id}/settings", responses=READ)
def replace_run_settings(run_id: str, body: SettingsIn, principal: Admin, session: SessionDep) -> RunSettingsOut:
    """Replace the run-level overrides that the run's retries (``POST .../retry``) start with."""
    return _set_next(session, run_id, principal, body, merge=False)


@router.post(V2 + "/runs/{run_id}/settings", responses=READ)
@router.post(V3 + "/runs/{run_id}/settings", responses=READ)
def update_run_settings(run_id: str, body: SettingsIn, principal: Admin, session: SessionDep) -> RunSettingsOut:
    """Change some run-level overrides for the run's retries, keeping the others."""
    return _set_next(session, run_id, principal, body, merge=True)
