"""A tenant's privacy mode and allowlists (v4): what may leave for an LLM, and where outbound calls may go."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from metabuilder.api.deps import Admin, ConfigDep, SessionDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V4
from metabuilder.domain.privacy import PrivacyMode
from metabuilder.service import privacy as service

router = APIRouter(tags=["governance"])


class PrivacyIn(BaseModel):
    """The tenant's own settings; a field left out follows the platform."""

    model_config = ConfigDict(extra="forbid")

    mode: PrivacyMode | None = Field(default=None, description="none, local, redacted or open")
    llm_allowlist: list[str] | None = Field(default=None, max_length=50, description="LLM hosts allowed under local")
    domain_allowlist: list[str] | None = Field(default=None, max_length=50,
                                               description="hosts any outbound call may go to (and the platform's)")
    redact_patterns: list[str] | None = Field(default=None, max_length=50,
                                              description="regular expressions masked in prompts")


class PrivacyOut(BaseModel):
    tenant: str
    mode: PrivacyMode
    llm_allowlist: list[str]
    domain_allowlist: list[str] | None
    """The tenant's (None: the platform's alone applies)."""
    platform_domain_allowlist: list[str]
    redact_patterns: list[str]
    sources: dict[str, str]
    overrides: dict[str, Any]


def _out(current: service.TenantPrivacy) -> PrivacyOut:
    e = current.effective
    return PrivacyOut(tenant=current.tenant, mode=e.mode, llm_allowlist=list(e.llm_allowlist),
                      domain_allowlist=list(e.tenant_domains) if e.tenant_domains is not None else None,
                      platform_domain_allowlist=list(e.platform_domains), redact_patterns=list(e.redact_patterns),
                      sources=dict(e.sources), overrides=current.overrides)


@router.get(V4 + "/tenants/{tenant_id}/privacy", responses=responses(401, 403, 404, 422))
def get_privacy(tenant_id: str, principal: Viewer, session: SessionDep, config: ConfigDep) -> PrivacyOut:
    """The tenant's privacy mode and allowlists, and where each comes from."""
    return _out(service.tenant_privacy(session, config.privacy, tenant_id, tenant=principal.tenant))


@router.put(V4 + "/tenants/{tenant_id}/privacy", responses=responses(401, 403, 404, 422))
def replace_privacy(tenant_id: str, body: PrivacyIn, principal: Admin, session: SessionDep,
                    config: ConfigDep) -> PrivacyOut:
    """Replace the tenant's privacy settings (``{}``: the platform's apply); audited as ``privacy.changed``."""
    return _out(service.change_tenant_privacy(session, config.privacy, tenant_id, body.model_dump(exclude_none=True),
                                              where="body", tenant=principal.tenant, actor=principal.user))
