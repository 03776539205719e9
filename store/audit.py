"""The audit log: the events auto-fix and the approval gates write, read per tenant."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.store.models import AuditEvent


def audit_events(session: Session, *, tenant: str, run_id: str | None = None, event: str | None = None,
                 limit: int | None = None, offset: int = 0) -> list[AuditEvent]:
    """A tenant's audit events, oldest first; of one run, of one event name (``approval.granted``)
    or, ending in ``.*``, of one family (``autofix.*``)."""
    stmt = select(AuditEvent).where(AuditEvent.tenant_id == tenant).order_by(AuditEvent.created_at, AuditEvent.id)
    if run_id is not None:
        stmt = stmt.where(AuditEvent.run_id == run_id)
    if event is not None:
        stmt = (stmt.where(AuditEvent.event.startswith(event[:-1], autoescape=True)) if event.endswith(".*")
                else stmt.where(AuditEvent.event == event))
    return list(session.scalars(stmt.limit(limit).offset(offset)))
