"""Approval gates in the DB projection, and their audit events."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from metabuilder.domain.approvals import GateStatus, GateView, audit_event
from metabuilder.store.models import ApprovalGate, AuditEvent, utcnow
from metabuilder.store.rows import stable_id, upsert
from metabuilder.store.tenants import ensure_tenant


def record_gate(session: Session, tenant: str, gate: GateView) -> bool:
    """Upsert a gate and write its audit event: ``approval.requested`` when it opens, then
    ``approval.granted``, ``.rejected`` or ``.expired``. Idempotent (keyed by the gate id).
    Returns whether the gate's state is new (False when the same state is written again).

    A decision made through the API is audited once: this event and the API's
    (:func:`record_decision_request`) are the same row, whichever is written first."""
    ensure_tenant(session, tenant)
    previous = session.scalar(select(ApprovalGate.status).where(ApprovalGate.id == gate.gate_id))
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
    upsert(session, AuditEvent, _gate_audit(tenant, gate, None), keys=["id"], update=[])
    return previous != str(gate.status)


def record_decision_request(session: Session, tenant: str, gate: GateView, request_id: str | None) -> None:
    """Tie a decided gate's audit event to the request that decided it (the API's): the same row
    as the run's own (:func:`record_gate`), so the decision is audited once."""
    ensure_tenant(session, tenant)
    upsert(session, AuditEvent, _gate_audit(tenant, gate, request_id), keys=["id"], update=["request_id"])


def _gate_audit(tenant: str, gate: GateView, request_id: str | None) -> dict[str, object]:
    pending = gate.status == GateStatus.PENDING
    event = "approval.requested" if pending else audit_event(gate)
    return {"id": stable_id(gate.gate_id, event), "tenant_id": tenant, "run_id": gate.run_id, "event": event,
            "actor": gate.decided_by or "metabuilder", "target": f"gate:{gate.gate_id}", "request_id": request_id,
            "before": None if pending else {"status": str(GateStatus.PENDING)},
            "after": {"status": str(gate.status)} if pending else {"status": str(gate.status),
                                                                     "reason": gate.decision_reason},
            "data": {"gate_id": gate.gate_id, "step": gate.step, "kind": gate.kind, "action": gate.action,
                     "signal_type": gate.signal_type, "status": gate.status, "reason": gate.decision_reason
                     or gate.reason, **_proposal_audit(gate)},
            "created_at": utcnow()}


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


GATE_VIEW = (ApprovalGate.id, ApprovalGate.run_id, ApprovalGate.step_name, ApprovalGate.kind, ApprovalGate.action,
             ApprovalGate.status, ApprovalGate.reason, ApprovalGate.signal_type, ApprovalGate.evidence,
             ApprovalGate.deciders, ApprovalGate.on_expiry, ApprovalGate.opened_at, ApprovalGate.expires_at,
             ApprovalGate.decided_by, ApprovalGate.decided_at, ApprovalGate.decision_reason, ApprovalGate.proposal)
"""The columns ``store.views.gate_fields`` reads."""


def run_gate_rows(session: Session, *, tenant: str, run_id: str, limit: int = 100) -> list[Row[Any]]:
    """``list_gates`` of one run as plain rows of ``GATE_VIEW`` (read by attribute like an
    ``ApprovalGate``), no ORM objects."""
    return list(session.execute(
        select(*GATE_VIEW).where(ApprovalGate.tenant_id == tenant, ApprovalGate.run_id == run_id)
        .order_by(ApprovalGate.opened_at, ApprovalGate.id).limit(limit)))


def recent_decisions(session: Session, *, tenant: str, limit: int = 20) -> list[ApprovalGate]:
    """The tenant's gates that are no longer pending, most recently decided first."""
    stmt = (select(ApprovalGate)
            .where(ApprovalGate.tenant_id == tenant, ApprovalGate.status != GateStatus.PENDING.value)
            .order_by(ApprovalGate.decided_at.desc().nulls_last(), ApprovalGate.id).limit(limit))
    return list(session.scalars(stmt))
