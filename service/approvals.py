"""Deciding approval gates: find the gate in the DB projection, send the decision to its run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from metabuilder.domain.approvals import Decision, DecisionInput, GateView
from metabuilder.domain.runs import workflow_id
from metabuilder.service.errors import Conflict, Unavailable
from metabuilder.service.tenancy import own_gate
from metabuilder.store import approvals
from metabuilder.store.audit import REQUEST_ID
from metabuilder.store.db import transaction

UPDATE_TIMEOUT = timedelta(seconds=15)
"""How long a decision waits for the run's worker to accept it (the API never waits longer)."""


def gate_run(sessions: sessionmaker[Session], gate_id: str, tenant: str | None = None) -> str:
    """The run id of a gate; ``NotFound`` if there is no such gate (of ``tenant``, when given)."""
    with transaction(sessions) as session:
        return own_gate(session, gate_id, tenant).run_id


def _audit_request(sessions: sessionmaker[Session], tenant: str, gate: GateView) -> None:
    with transaction(sessions) as session:
        approvals.record_decision_request(session, tenant, gate, REQUEST_ID.get())


def _gate_of(sessions: sessionmaker[Session], gate_id: str, tenant: str | None) -> tuple[str, str]:
    with transaction(sessions) as session:
        gate = own_gate(session, gate_id, tenant)
        return gate.run_id, gate.tenant_id


async def decide_gate(connect: Callable[[], Awaitable[Client]], sessions: sessionmaker[Session],
                      gate_id: str, decision: Decision, *, by: str, reason: str = "",
                      tenant: str | None = None) -> GateView:
    """Send ``decision`` to the gate's run as an Update and return the decided gate.

    ``Conflict`` when the run refuses it (already decided, a reason is missing) or no longer runs,
    ``Unavailable`` when no worker or server answers within :data:`UPDATE_TIMEOUT`. ``connect``
    is called only once the gate is known, so an unknown gate is reported even without Temporal.
    """
    run_id, gate_tenant = await asyncio.to_thread(_gate_of, sessions, gate_id, tenant)
    client = await connect()
    handle = client.get_workflow_handle(workflow_id(run_id))
    try:
        decided = await handle.execute_update(decision.value, DecisionInput(gate_id=gate_id, by=by, reason=reason),
                                              result_type=GateView, rpc_timeout=UPDATE_TIMEOUT)
        # The run's worker writes the decision's audit event too: the same row, so it is written once,
        # and this write ties it to the request that made it.
        await asyncio.to_thread(_audit_request, sessions, gate_tenant, decided)
        return decided
    except WorkflowUpdateFailedError as err:
        raise Conflict(getattr(err.cause, "message", str(err.cause))) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise Unavailable(f"run {run_id} did not answer within {UPDATE_TIMEOUT.seconds}s: "
                          "are its workers running?") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"run {run_id} is not running any more; gate {gate_id} can no longer be decided") from None
        if err.status == RPCStatusCode.UNAVAILABLE:
            raise Unavailable(f"Temporal is unavailable: {err}") from None
        raise
