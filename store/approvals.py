"""Approval gates in the DB projection, and their audit events."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.domain.approvals import GateStatus, GateView, audit_event
from metabuilder.store.models import ApprovalGate, AuditEvent, utcnow
from metabuilder.store.rows import stable_id, upsert
from metabuilder.store.tenants import ensure_tenant


def record_gate(session: Session, tenant: str, gate: GateView) -> bool:
    """Upsert a gate and write its audit event: ``approval.requested`` when it opens, then
    ``approval.granted``, ``.rejected`` or ``.expired``. Idempotent (keyed by the gate id).
    Returns whether the audit event is new (False when the same state is written again)."""
    ensure_tenant(session, tenant)
    upsert(session, ApprovalGate,
            {"id": gate.gate_id, "run_id": gate.run_id, "tenant_id": tenant, "step_name": gate.step,
             "kind": gate.kind, "action": gate.action, "status": gate.status, "reason": gate.reason,
             "signal_type": gate.signal_type, "evidence": list(gate.evidence), "deciders": list(gate.deciders),
             "on_expiry": gate.on_expiry, "opened_at": gate.opened_at,
             "expires_at": gate.expires_at, "decided_by": gate.decided_by,
             "decided_at": gate.decided_at,
             "decision_reason": gate.decision_reason,
             "proposal": asdict(gate.proposal) if gate.proposal else None},
            keys=["id"], update=["status", "decided_by", "decided_at", "decision_reason"])
    event = "approval.requested" if gate.status == GateStatus.PENDING else audit_event(gate)
    return upsert(session, AuditEvent,
            {"id": stable_id(gate.gate_id, event), "tenant_id": tenant, "run_id": gate.run_id, "event": event,
             "actor": gate.decided_by or "metabuilder",
             "data": {"gate_id": gate.gate_id, "step": gate.step, "kind": gate.kind, "action": gate.action,
                      "signal_type": gate.signal_type, "status": gate.status, "reason": gate.decision_reason
                      or gate.reason, **_proposal_audit(gate)},
             "created_at": utcnow()},
            keys=["id"], update=[])


def _proposal_audit(gate: GateView) -> dict[str, object]:
    """What an audit reader needs about a gate's patch: which attempt, which files, how risky."""
    p = gate.proposal
    return {} if p is None else {"proposal": {"seq": p.seq, "fixer": p.fixer, "files": list(p.files),
                                              "high_risk": p.high_risk, "findings": list(p.findings)}}


def get_gate(session: Session, gate_id: str) -> ApprovalGate | None:
    return session.get(ApprovalGate, gate_id)


def list_gates(session: Session, *, tenant: str, run_id: str | None = None, status: str | None = None,
               limit: int = 100, offset: int = 0) -> list[ApprovalGate]:
    stmt = select(ApprovalGate).where(ApprovalGate.tenant_id == tenant)
    if run_id is not None:
        stmt = stmt.where(ApprovalGate.run_id == run_id)
    if status is not None:
        stmt = stmt.where(ApprovalGate.status == status)
    return list(session.scalars(stmt.order_by(ApprovalGate.opened_at, ApprovalGate.id).limit(limit).offset(offset)))


def recent_decisions(session: Session, *, tenant: str, limit: int = 20) -> list[ApprovalGate]:
    """The tenant's gates that are no longer pending, most recently decided first."""
    stmt = (select(ApprovalGate)
            .where(ApprovalGate.tenant_id == tenant, ApprovalGate.status != GateStatus.PENDING.value)
            .order_by(ApprovalGate.decided_at.desc().nulls_last(), ApprovalGate.id).limit(limit))
    return list(session.scalars(stmt))
