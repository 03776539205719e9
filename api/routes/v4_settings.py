"""A tenant's v4 settings (the tenant level of ``FEATURE_META_V4_ENABLED``: platform -> tenant -> run)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from metabuilder.api.deps import Admin, ConfigDep, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.schemas import Strict
from metabuilder.service import scheduling as service

V4 = "/api/meta/v4"
router = APIRouter(tags=["settings"])
READ = responses(401, 403, 404, 422)


class V4SettingsIn(Strict):
    enabled: bool | None = Field(default=None, description="v4 scheduling (priority, fairness) for the tenant's "
                                                           "runs; null or absent: the platform's value.")


class V4SettingsOut(BaseModel):
    tenant: str
    enabled: bool = Field(description="What the tenant's runs get, unless a run says otherwise.")
    source: str = Field(description="platform or tenant.")
    overrides: dict[str, bool]


@router.get(V4 + "/tenants/{tenant_id}/settings", responses=READ)
def tenant_v4_settings(tenant_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> V4SettingsOut:
    """The tenant's v4 flag, where it comes from, and the tenant's own override."""
    return V4SettingsOut(**service.tenant_v4(session, config.v4, tenant_id, tenant=principal.tenant))


@router.put(V4 + "/tenants/{tenant_id}/settings", responses=READ)
def replace_tenant_v4_settings(tenant_id: str, body: V4SettingsIn, principal: Admin, session: SessionDep,
                               config: ConfigDep) -> V4SettingsOut:
    """Set the tenant's v4 override (``{"enabled": false}``), or drop it (``{}``: the platform's value)."""
    changes = {} if body.enabled is None else {"enabled": body.enabled}
    return V4SettingsOut(**service.change_tenant_v4(session, config.v4, tenant_id, changes, merge=False,
                                                    where="body", tenant=principal.tenant,
                                                    actor=principal.user))
