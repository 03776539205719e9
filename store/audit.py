"""The audit log: every change of state, who made it, to what, before and after, and in which
request; read per tenant, by run, event and time."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.store.models import AuditEvent, utcnow
from metabuilder.store.tenants import ensure_tenant

REQUEST_ID: ContextVar[str | None] = ContextVar("metabuilder_request_id", default=None)
"""The request being served (the API's ``X-Request-ID`` middleware, a CLI invocation): every
audit event written meanwhile names it."""


def write_audit(session: Session, event: str, *, tenant: str, actor: str, target: str | None = None,
                before: Any = None, after: Any = None, run_id: str | None = None,
                data: dict[str, Any] | None = None) -> AuditEvent:
    """Add one audit event to the session's transaction (it commits with the change it records)."""
    ensure_tenant(session, tenant)
    row = AuditEvent(id=str(uuid.uuid4()), tenant_id=tenant, run_id=run_id, event=event, actor=actor or "unknown",
                     data=dict(data or {}), created_at=utcnow(), target=target, request_id=REQUEST_ID.get(),
                     before=before, after=after)
    session.add(row)
    return row


def audit_events(session: Session, *, tenant: str | None, run_id: str | None = None, event: str | None = None,
                 since: datetime | None = None, until: datetime | None = None, request_id: str | None = None,
                 limit: int | None = None, offset: int = 0) -> list[AuditEvent]:
    """A tenant's audit events (every tenant's with None), oldest first; of one run, of one event
    name (``approval.granted``) or, ending in ``.*``, of one family (``autofix.*``); from ``since``
    (inclusive) to ``until`` (exclusive)."""
    stmt = select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id)
    if tenant is not None:
        stmt = stmt.where(AuditEvent.tenant_id == tenant)
    if run_id is not None:
        stmt = stmt.where(AuditEvent.run_id == run_id)
    if request_id is not None:
        stmt = stmt.where(AuditEvent.request_id == request_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.created_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.created_at < until)
    if event is not None:
        stmt = (stmt.where(AuditEvent.event.startswith(event[:-1], autoescape=True)) if event.endswith(".*")
                else stmt.where(AuditEvent.event == event))
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def audit_fields(row: AuditEvent) -> dict[str, Any]:
    """One event as the API and the JSON-lines export show it."""
    return {"id": row.id, "tenant": row.tenant_id, "event": row.event, "actor": row.actor, "target": row.target,
            "run_id": row.run_id, "request_id": row.request_id, "before": row.before, "after": row.after,
            "data": dict(row.data or {}), "created_at": row.created_at.isoformat()}


def export_events(session: Session, *, tenant: str | None, since: datetime | None, until: datetime | None,
                  batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Every event of the range, in batches (an export may be long)."""
    offset = 0
    while True:
        rows = audit_events(session, tenant=tenant, since=since, until=until, limit=batch, offset=offset)
        yield from (audit_fields(r) for r in rows)
        if len(rows) < batch:
            return
        offset += batch
