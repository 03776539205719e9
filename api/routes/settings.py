"""Auto-fix settings of a tenant and of a run (seed 001: platform -> tenant -> run)."""

from __future__ import annotations

from fastapi import APIRouter

from metabuilder.api.deps import Admin, ConfigDep, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V2, V3
from metabuilder.api.schemas import RunSettingsOut, SettingsIn, TenantSettingsOut
from metabuilder.api.settings_body import api_names, overrides_of, values_of
from metabuilder.service import settings as service
from metabuilder.service.tenancy import own_run
from metabuilder.store.models import BuildRun

router = APIRouter(tags=["settings"])
READ = responses(401, 403, 404, 422)


def _tenant_out(current: service.TenantAutofix) -> TenantSettingsOut:
    return TenantSettingsOut(tenant=current.tenant, effective=values_of(current.effective.settings),
                             sources=api_names(current.effective.sources), overrides=api_names(current.overrides))


@router.get(V2 + "/tenants/{tenant_id}/settings", responses=READ)
@router.get(V3 + "/tenants/{tenant_id}/settings", responses=READ)
def tenant_settings(tenant_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> TenantSettingsOut:
    """The tenant's effective auto-fix settings, where each comes from, and its own overrides."""
    return _tenant_out(service.tenant_settings(session, config.platform, tenant_id, tenant=principal.tenant))


@router.put(V2 + "/tenants/{tenant_id}/settings", responses=READ)
@router.put(V3 + "/tenants/{tenant_id}/settings", responses=READ)
def replace_tenant_settings(tenant_id: str, body: SettingsIn, principal: Admin, session: SessionDep,
                            config: ConfigDep) -> TenantSettingsOut:
    """Replace the tenant's overrides (``{}`` resets the tenant to the platform defaults)."""
    return _tenant_out(service.change_tenant_settings(session, config.platform, tenant_id, overrides_of(body),
                                                      merge=False, where="body", tenant=principal.tenant,
                                                      actor=principal.user))


@router.post(V2 + "/tenants/{tenant_id}/settings", responses=READ)
@router.post(V3 + "/tenants/{tenant_id}/settings", responses=READ)
def update_tenant_settings(tenant_id: str, body: SettingsIn, principal: Admin, session: SessionDep,
                           config: ConfigDep) -> TenantSettingsOut:
    """Change some of the tenant's overrides, keeping the others (``{"autofix_enabled": false}``)."""
    return _tenant_out(service.change_tenant_settings(session, config.platform, tenant_id, overrides_of(body),
                                                      merge=True, where="body", tenant=principal.tenant,
                                                      actor=principal.user))


def _run_out(run: BuildRun) -> RunSettingsOut:
    return RunSettingsOut(run_id=run.id, effective=api_names(run.settings),
                          sources=api_names(run.settings.get("sources", {})),
                          next_overrides=api_names(run.next_overrides))


@router.get(V2 + "/runs/{run_id}/settings", responses=READ)
@router.get(V3 + "/runs/{run_id}/settings", responses=READ)
def run_settings(run_id: str, principal: Viewer, session: SessionDep) -> RunSettingsOut:
    """The settings the run runs with (fixed at its start), and the overrides set for its retries."""
    return _run_out(own_run(session, run_id, principal.tenant))


@router.put(V2 + "/runs/{run_id}/settings", responses=READ)
@router.put(V3 + "/runs/{run_id}/settings", responses=READ)
def replace_run_settings(run_id: str, body: SettingsIn, principal: Admin, session: SessionDep) -> RunSettingsOut:
    """Replace the run-level overrides that the run's retries (``POST .../retry``) start with."""
    return _run_out(service.change_run_overrides(session, run_id, overrides_of(body), merge=False, where="body",
                                                 tenant=principal.tenant, actor=principal.user))


@router.post(V2 + "/runs/{run_id}/settings", responses=READ)
@router.post(V3 + "/runs/{run_id}/settings", responses=READ)
def update_run_settings(run_id: str, body: SettingsIn, principal: Admin, session: SessionDep) -> RunSettingsOut:
    """Change some run-level overrides for the run's retries, keeping the others."""
    return _run_out(service.change_run_overrides(session, run_id, overrides_of(body), merge=True, where="body",
                                                 tenant=principal.tenant, actor=principal.user))
