"""A tenant's own failure patterns and the corrections people make to the classifier."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from metabuilder.domain.knowledge import EntryKind, KnowledgeBase, PatternEntry, bundled_knowledge_base
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store.models import Correction, TenantPattern, utcnow
from metabuilder.store.tenants import ensure_tenant


def _entry(row: TenantPattern) -> PatternEntry:
    return PatternEntry(id=row.entry_id, pattern=row.pattern,
                        failure_type=FailureType(row.failure_type) if row.failure_type else None,
                        weight=row.weight, description=row.description, kind=EntryKind(row.kind))


def tenant_entries(session: Session, tenant: str) -> list[PatternEntry]:
    rows = session.scalars(select(TenantPattern).where(TenantPattern.tenant_id == tenant)
                           .order_by(TenantPattern.entry_id))
    return [_entry(row) for row in rows]


def tenant_knowledge_base(session: Session, tenant: str) -> KnowledgeBase:
    """The bundled base plus the tenant's own entries (the base itself when it has none)."""
    extra = tenant_entries(session, tenant)
    return bundled_knowledge_base().extended(extra) if extra else bundled_knowledge_base()


def put_entries(session: Session, tenant: str, entries: Sequence[PatternEntry], by: str) -> None:
    """Add or replace the tenant's entries with these ids."""
    ensure_tenant(session, tenant)
    for entry in entries:
        row = session.scalars(select(TenantPattern).where(TenantPattern.tenant_id == tenant,
                                                          TenantPattern.entry_id == entry.id)).first()
        if row is None:
            row = TenantPattern(tenant_id=tenant, entry_id=entry.id, created_by=by, created_at=utcnow())
            session.add(row)
        row.failure_type = entry.failure_type.value if entry.failure_type else None
        row.pattern, row.weight, row.description, row.kind = entry.pattern, entry.weight, entry.description, entry.kind
        row.updated_at = utcnow()
    session.flush()


def delete_entry(session: Session, tenant: str, entry_id: str) -> bool:
    result = session.execute(delete(TenantPattern).where(TenantPattern.tenant_id == tenant,
                                                         TenantPattern.entry_id == entry_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_correction(session: Session, tenant: str, *, run_id: str | None, step_name: str, predicted: str,
                   corrected: str, log_window: str, exit_code: int | None, proposed: str | None, note: str,
                   by: str) -> Correction:
    ensure_tenant(session, tenant)
    row = Correction(id=str(uuid.uuid4()), tenant_id=tenant, run_id=run_id, step_name=step_name, predicted=predicted,
                     corrected=corrected, note=note, log_window=log_window, exit_code=exit_code,
                     proposed_pattern=proposed, status="open", created_by=by, created_at=utcnow())
    session.add(row)
    session.flush()
    return row


def list_corrections(session: Session, tenant: str, limit: int = 500) -> list[Correction]:
    return list(session.scalars(select(Correction).where(Correction.tenant_id == tenant)
                                .order_by(Correction.created_at.desc(), Correction.id).limit(limit)))


def get_correction(session: Session, tenant: str, correction_id: str) -> Correction | None:
    row = session.get(Correction, correction_id)
    return row if row is not None and row.tenant_id == tenant else None


def accept_correction(session: Session, correction: Correction) -> None:
    """Mark a correction accepted: its proposed pattern is one of the tenant's patterns now."""
    correction.status = "accepted"
    session.flush()
