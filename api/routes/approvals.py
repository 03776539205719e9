"""Approval gates: list them, and approve or reject one (admin or owner)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from metabuilder.api.deps import Admin, ConfigDep, PagerDep, SessionDep, TemporalDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V2, V3
from metabuilder.api.routes.views import gate_out
from metabuilder.api.schemas import DecisionIn, GateOut
from metabuilder.domain.access import Principal
from metabuilder.domain.approvals import Decision, GateStatus
from metabuilder.service.approvals import decide_gate
from metabuilder.service.tenancy import own_gate
from metabuilder.store import approvals

router = APIRouter(tags=["approvals"])
ACT = responses(401, 403, 404, 409, 422, 503)


@router.get(V3 + "/approvals", responses=responses(401, 403, 422))
def list_approvals(principal: Viewer, session: SessionDep, pager: PagerDep,
                   status: GateStatus | None = GateStatus.PENDING,
                   limit: Annotated[int, Query(ge=1, le=500)] = 100,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[GateOut]:
    """The tenant's gates, oldest first; pending ones unless ``status`` says otherwise (a ``Link``
    header points to the next page)."""
    rows = approvals.list_gates(session, tenant=principal.tenant, status=status.value if status else None,
                                limit=limit + 1, offset=offset)
    return [gate_out(g) for g in pager.page(rows, limit, offset)]


@router.get(V3 + "/approvals/{gate_id}", responses=responses(401, 403, 404, 422))
def get_approval(gate_id: str, principal: Viewer, session: SessionDep) -> GateOut:
    """One gate: what failed, the evidence, the proposed action, and the decision once there is one."""
    return gate_out(own_gate(session, gate_id, principal.tenant))


async def _decide(gate_id: str, decision: Decision, body: DecisionIn, principal: Principal, config: ConfigDep,
                  temporal: TemporalDep) -> GateOut:
    # The run's answer; its DB row follows as soon as the workflow records the decision.
    decided = await decide_gate(temporal.client, config.sessions, gate_id, decision, by=principal.user,
                                reason=body.reason, tenant=principal.tenant)
    return GateOut.model_validate(asdict(decided))


@router.post(V2 + "/approvals/{gate_id}/approve", responses=ACT)
@router.post(V3 + "/approvals/{gate_id}/approve", responses=ACT)
async def approve(gate_id: str, principal: Admin, config: ConfigDep, temporal: TemporalDep,
                  body: DecisionIn | None = None) -> GateOut:
    """Approve a pending gate: the run continues with the gate's action (run, re-run, or accept the finding)."""
    return await _decide(gate_id, Decision.APPROVE, body or DecisionIn(), principal, config, temporal)


@router.post(V2 + "/approvals/{gate_id}/reject", responses=ACT)
@router.post(V3 + "/approvals/{gate_id}/reject", responses=ACT)
async def reject(gate_id: str, body: DecisionIn, principal: Admin, config: ConfigDep, temporal: TemporalDep) -> GateOut:
    """Reject a pending gate with a reason: the run fails with it."""
    return await _decide(gate_id, Decision.REJECT, body, principal, config, temporal)
