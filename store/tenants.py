"""Tenants as the run projection knows them, and their auto-fix overrides."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from metabuilder.store.models import Tenant, TenantSettings, utcnow
from metabuilder.store.rows import upsert


def ensure_tenant(session: Session, tenant_id: str, name: str | None = None) -> None:
    upsert(session, Tenant, {"id": tenant_id, "name": name or tenant_id, "created_at": utcnow()},
            keys=["id"], update=[])


def tenant_autofix(session: Session, tenant_id: str) -> dict[str, Any]:
    """The tenant's auto-fix overrides (empty: none, the platform's values apply)."""
    row = session.get(TenantSettings, tenant_id)
    return dict(row.autofix) if row else {}


def set_tenant_autofix(session: Session, tenant_id: str, overrides: dict[str, Any]) -> None:
    """Replace the tenant's overrides (``{}`` resets it to the platform defaults)."""
    ensure_tenant(session, tenant_id)
    upsert(session, TenantSettings, {"tenant_id": tenant_id, "autofix": overrides, "updated_at": utcnow()},
            keys=["tenant_id"], update=["autofix", "updated_at"])
