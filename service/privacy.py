"""A tenant's privacy mode and allowlists: reading them with their sources, and changing them (audited)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from metabuilder.domain.privacy import (
    EffectivePrivacy,
    Privacy,
    effective_privacy,
    parse_privacy,
    privacy_fields,
    run_loosening,
)
from metabuilder.service.errors import BadRequest
from metabuilder.service.tenancy import own_tenant
from metabuilder.store import governance
from metabuilder.store.audit import write_audit


@dataclass(frozen=True)
class TenantPrivacy:
    tenant: str
    overrides: dict[str, Any]
    effective: EffectivePrivacy


def tenant_privacy(session: Session, platform: Privacy, tenant_id: str, *, tenant: str | None) -> TenantPrivacy:
    tenant_id = own_tenant(tenant_id, tenant)
    mine = governance.tenant_privacy(session, tenant_id)
    return TenantPrivacy(tenant_id, privacy_fields(mine), effective_privacy(platform, mine))


def change_tenant_privacy(session: Session, platform: Privacy, tenant_id: str, changes: Mapping[str, Any], *,
                          where: str, tenant: str | None, actor: str) -> TenantPrivacy:
    """Replace the tenant's privacy settings (``{}``: the platform's apply); a bad value is a
    ``BadRequest`` naming ``where`` and the field."""
    tenant_id = own_tenant(tenant_id, tenant)
    try:
        new = parse_privacy(changes, where)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    before = privacy_fields(governance.tenant_privacy(session, tenant_id))
    governance.set_tenant_privacy(session, tenant_id, new)
    write_audit(session, "privacy.changed", tenant=tenant_id, actor=actor, target=f"tenant:{tenant_id}/privacy",
                before=before, after=privacy_fields(new))
    return TenantPrivacy(tenant_id, privacy_fields(new), effective_privacy(platform, new))


def effective_for(session: Session, platform: Privacy, tenant_id: str) -> EffectivePrivacy:
    """What a tenant's outbound calls obey now (for the activities)."""
    return effective_privacy(platform, governance.tenant_privacy(session, tenant_id))


def run_privacy(session: Session, platform: Privacy, tenant_id: str, raw: Mapping[str, Any], *,
                where: str, mode_field: str | None = None) -> Privacy:
    """A run's own privacy settings, checked against its tenant's: ``BadRequest`` naming ``where``
    and the field (the mode's: ``mode_field``, default ``<where>.mode``) when one is malformed or
    would loosen them."""
    try:
        run = parse_privacy(raw, where)
    except ValueError as err:
        raise BadRequest(str(err)) from None
    if why := run_loosening(effective_privacy(platform, governance.tenant_privacy(session, tenant_id)), run):
        raise BadRequest(f"{mode_field or where + '.mode'}: {why}")
    return run


def keep_run_privacy(session: Session, run_id: str, tenant_id: str, run: Privacy) -> None:
    """Store a run's own settings, before its workflow starts (its first call out obeys them)."""
    governance.set_run_privacy(session, run_id, tenant_id, run)
