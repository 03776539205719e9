"""A tenant's privacy settings (``mb_v4_tenant_governance``) and a run's own (``mb_v4_run_privacy``)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from metabuilder.domain.privacy import (
    EffectivePrivacy,
    Privacy,
    effective_privacy,
    parse_privacy,
    privacy_fields,
    with_run,
)
from metabuilder.store.models import RunPrivacy, TenantGovernance, utcnow
from metabuilder.store.rows import upsert
from metabuilder.store.tenants import ensure_tenant


def tenant_privacy(session: Session, tenant_id: str) -> Privacy:
    """What the tenant sets (nothing set: the platform's values apply)."""
    row = session.get(TenantGovernance, tenant_id)
    return parse_privacy(row.privacy, "stored privacy") if row else Privacy()


def set_tenant_privacy(session: Session, tenant_id: str, privacy: Privacy) -> None:
    ensure_tenant(session, tenant_id)
    upsert(session, TenantGovernance, {"tenant_id": tenant_id, "privacy": privacy_fields(privacy),
                                       "updated_at": utcnow()}, keys=["tenant_id"], update=["privacy", "updated_at"])


def run_privacy(session: Session, run_id: str) -> Privacy | None:
    """What the run sets for itself (None: nothing)."""
    row = session.get(RunPrivacy, run_id)
    return parse_privacy(row.privacy, "stored run privacy") if row else None


def set_run_privacy(session: Session, run_id: str, tenant_id: str, privacy: Privacy) -> None:
    upsert(session, RunPrivacy, {"run_id": run_id, "tenant_id": tenant_id, "privacy": privacy_fields(privacy),
                                 "updated_at": utcnow()}, keys=["run_id"], update=["privacy", "updated_at"])


def effective(session: Session, platform: Privacy, tenant_id: str, run_id: str | None = None) -> EffectivePrivacy:
    """What a call for the tenant (and, given, its run) obeys now: platform -> tenant -> run."""
    base = effective_privacy(platform, tenant_privacy(session, tenant_id))
    return with_run(base, run_privacy(session, run_id)) if run_id is not None else base
