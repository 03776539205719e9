"""v4 rows: tenants' v4 overrides and the idempotency keys of run submissions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from metabuilder.store.models import IdempotencyKey, V4TenantSettings, utcnow
from metabuilder.store.rows import upsert
from metabuilder.store.tenants import ensure_tenant


def tenant_v4(session: Session, tenant_id: str) -> dict[str, Any]:
    """The tenant's v4 overrides (empty: the platform's values apply)."""
    row = session.get(V4TenantSettings, tenant_id)
    return dict(row.settings) if row else {}


def set_tenant_v4(session: Session, tenant_id: str, overrides: dict[str, Any]) -> None:
    """Replace the tenant's v4 overrides (``{}``: back to the platform's values)."""
    ensure_tenant(session, tenant_id)
    upsert(session, V4TenantSettings, {"tenant_id": tenant_id, "settings": overrides, "updated_at": utcnow()},
           keys=["tenant_id"], update=["settings", "updated_at"])


def claim_key(session: Session, tenant_id: str, key: str, body_hash: str, run_id: str, *,
              expired_before: datetime) -> IdempotencyKey | None:
    """Take ``key`` for a new submission that will start ``run_id`` (None: it is ours now), or
    return the row that holds it. The tenant's keys taken before ``expired_before`` are dropped
    first, so an old key is free again and the table holds only the retention window."""
    ensure_tenant(session, tenant_id)
    session.execute(delete(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id,
                                                 IdempotencyKey.created_at < expired_before))
    if upsert(session, IdempotencyKey, {"tenant_id": tenant_id, "key": key, "body_hash": body_hash,
                                        "run_id": run_id, "created_at": utcnow()},
              keys=["tenant_id", "key"], update=[]):
        return None
    return session.get(IdempotencyKey, (tenant_id, key))


def settle_key(session: Session, tenant_id: str, key: str, response: dict[str, Any]) -> None:
    """Record the answer a key's submission got, to repeat it to a retry of the same request."""
    row = session.get(IdempotencyKey, (tenant_id, key))
    if row is not None:
        row.response = response


def release_key(session: Session, tenant_id: str, key: str) -> None:
    """Drop a key whose submission was refused before its run started: the request may be tried again."""
    row = session.get(IdempotencyKey, (tenant_id, key))
    if row is not None and row.response is None:
        session.delete(row)
