"""Approval gates of a build run: the Update and Signal handlers that decide them, and the wait.

``BuildRunWorkflow`` mixes this in; it owns the run's view, plan and status. Kept apart so that
the run's step sequencing and its human decisions can be read separately.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metabuilder.domain.approvals import (
    ApproverQuery,
    Decision,
    DecisionInput,
    GateAction,
    GateKind,
    GateProposal,
    GateStatus,
    GateView,
    action_for,
    approver_refusal,
    check_decision,
    decide,
    expire,
    gate_id,
)
from metabuilder.domain.outcomes import EventOutcome, Strategy
from metabuilder.domain.payloads import (
    RUN_FAILED,
    ApplyInput,
    ApplyResult,
    AutofixEvent,
    BuildRunInput,
    GateRecord,
    PatchProposal,
    RunContext,
    RunView,
)
from metabuilder.domain.plans import Plan, Step
from metabuilder.domain.runs import RunStatus, StepStatus, task_queue
from metabuilder.domain.taxonomy import FailureType
from metabuilder.workflows.execution import RECORD_TIMEOUT, REPAIR_ACTIVITY_TIMEOUT, StepCancelled
from metabuilder.workflows.repair import ACTIVITY_RETRY

APPROVER_REFUSED = "ApproverRefused"
"""The error type of an Update refused because its approver does not hold a deciding role."""


class ApprovalGates:
    """Mixed into ``BuildRunWorkflow``, which provides the run's view, plan and status writer."""

    _view: RunView
    _run: RunContext
    _plan: Plan
    _set_status: Callable[[BuildRunInput, RunStatus], Awaitable[None]]
    _record: Callable[[BuildRunInput, list[AutofixEvent]], Awaitable[None]]
    _seq: int
    _verified_input: BuildRunInput | None
    """The run's input when its decisions are checked against the approver's current role."""

    # Approvals arrive as Updates (validated: a bad decision is refused before it enters the
    # history, and the caller gets the gate back) or as Signals of the same names and input, which
    # the plain `temporal workflow signal` CLI can send; an invalid signal is logged and dropped.

    @workflow.update(name="approve")
    async def approve(self, inp: DecisionInput) -> GateView:
        """Approve a pending gate: the run goes on with the gate's action."""
        return await self._decide(Decision.APPROVE, inp)

    @approve.validator
    def _check_approve(self, inp: DecisionInput) -> None:
        check_decision(self._view.gates, Decision.APPROVE, inp)

    @workflow.update(name="reject")
    async def reject(self, inp: DecisionInput) -> GateView:
        """Reject a pending gate (a reason is required): the run fails with it."""
        return await self._decide(Decision.REJECT, inp)

    @reject.validator
    def _check_reject(self, inp: DecisionInput) -> None:
        check_decision(self._view.gates, Decision.REJECT, inp)

    @workflow.signal(name="approve")
    async def approve_signal(self, inp: DecisionInput) -> None:
        await self._decide_signalled(Decision.APPROVE, inp)

    @workflow.signal(name="reject")
    async def reject_signal(self, inp: DecisionInput) -> None:
        await self._decide_signalled(Decision.REJECT, inp)

    async def _decide(self, decision: Decision, inp: DecisionInput) -> GateView:
        gate = check_decision(self._view.gates, decision, inp)
        if self._verified_input is not None:
            await self._check_approver(self._verified_input, gate, decision, inp)
            # Decided (or expired) while the approver was being looked up: refused like any late decision.
            gate = check_decision(self._view.gates, decision, inp)
        decide(gate, decision, inp, workflow.now())
        return gate

    async def _check_approver(self, run: BuildRunInput, gate: GateView, decision: Decision,
                              inp: DecisionInput) -> None:
        """Ask the DB for the approver's role in the run's tenant now (a role taken away while the
        gate waited no longer decides); a refusal goes on the run's timeline and audit log, and
        fails the Update (a Signal is dropped)."""
        role = await workflow.execute_local_activity(
            "approver_role", ApproverQuery(tenant=run.tenant, user=inp.by),
            start_to_close_timeout=RECORD_TIMEOUT)
        refusal = approver_refusal(gate, decision, inp, run.tenant, role)
        if refusal is None:
            return
        await self._record(run, [AutofixEvent(
            seq=self._seq, at=workflow.now(), step=gate.step, strategy=Strategy.ESCALATE,
            outcome=EventOutcome.REJECTED, signal_type=gate.signal_type, detail=refusal,
            audit="approval.refused")])
        raise ApplicationError(refusal, type=APPROVER_REFUSED, non_retryable=True)

    async def _decide_signalled(self, decision: Decision, inp: DecisionInput) -> None:
        try:
            await self._decide(decision, inp)
        except ValueError as err:
            workflow.logger.warning("ignored %s signal: %s", decision.value, err)
        except ApplicationError as err:
            workflow.logger.warning("refused %s signal: %s", decision.value, err.message)

    async def _gate(self, inp: BuildRunInput, kind: GateKind, step: str, reason: str, *,
                    signal_type: FailureType | None = None, evidence: list[str] | None = None,
                    proposal: GateProposal | None = None) -> GateView:
        """Open a gate, pause the run until it is decided or expires, and return it approved;
        a rejected gate fails the run with the decider's reason."""
        now, options = workflow.now(), self._plan.approvals
        action = action_for(kind, signal_type, proposal)
        gate = GateView(
            gate_id=gate_id(inp.run_id, len(self._view.gates) + 1), run_id=inp.run_id, step=step, kind=kind,
            action=action, reason=reason, opened_at=now,
            expires_at=now + timedelta(seconds=options.timeout_seconds),
            on_expiry=options.on_expiry, signal_type=signal_type, evidence=list(evidence or []),
            proposal=proposal if action is GateAction.APPLY_PATCH else None)
        self._view.gates.append(gate)
        await self._record_gate(inp, gate)
        await self._set_status(inp, RunStatus.PAUSED_AWAITING_APPROVAL)
        try:
            await workflow.wait_condition(lambda: not gate.pending,
                                          timeout=timedelta(seconds=options.timeout_seconds))
        except TimeoutError:
            expire(gate, workflow.now())
        except asyncio.CancelledError as err:
            gate.status, gate.decided_by, gate.decided_at = GateStatus.CANCELLED, "cancellation", workflow.now()
            await self._record_gate(inp, gate)
            raise StepCancelled() from err
        await self._record_gate(inp, gate)
        if not gate.approved:
            self._view.failed_step = step
            self._view.error = gate.summary()
            for view in self._view.steps:
                if view.name == step and view.status is StepStatus.PENDING:
                    view.status = StepStatus.CANCELLED
            await self._set_status(inp, RunStatus.FAILED)
            raise ApplicationError(self._view.error, self._view, type=RUN_FAILED, non_retryable=True)
        await self._set_status(inp, RunStatus.RUNNING)
        return gate

    async def _apply_approved(self, inp: BuildRunInput, gate: GateView, index: int, step: Step) -> str | None:
        """Apply the patch of an approved gate on the commit it was made on; the new commit, or
        None when it no longer applies (the step then re-runs as it was)."""
        assert gate.proposal is not None
        proposal = gate.proposal
        if gate.status != GateStatus.APPROVED:
            # An expiry that approves is nobody's decision: a patch is never applied unseen.
            await self._record(inp, [AutofixEvent(
                seq=self._seq, at=workflow.now(), step=step.name, strategy=Strategy.PATCH,
                outcome=EventOutcome.NOT_APPLIED, signal_type=gate.signal_type,
                detail=f"{proposal.fixer} patch of gate {gate.gate_id} not applied: the gate expired unseen; "
                       "the step re-runs as it was")])
            return None
        result = await workflow.execute_activity(
            "apply_patch", ApplyInput(
                run=self._run.ref, step_index=index, step_name=step.name, commit=proposal.base_commit,
                proposal=PatchProposal(fixer=proposal.fixer, diff=proposal.diff),
                write_scope=list(self._plan.write_scope), seq=proposal.seq,
                signal_type=gate.signal_type or FailureType.UNKNOWN,
                protected_checks=list(self._plan.protected_checks), approved_by=gate.decided_by or "unknown"),
            result_type=ApplyResult, task_queue=task_queue(inp.task_queue_prefix, step.queue),
            start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY)
        state = self._view.retry_state
        if result.applied and state is not None:
            state.charge(step.name)
        detail = (f"{proposal.fixer} patch applied to {', '.join(result.files)}: gate {gate.gate_id} approved by "
                  f"{gate.decided_by}" if result.applied else
                  f"{proposal.fixer} patch of gate {gate.gate_id} not applied: {'; '.join(result.problems)}")
        await self._record(inp, [AutofixEvent(
            seq=self._seq, at=workflow.now(), step=step.name, strategy=Strategy.PATCH,
            outcome=EventOutcome.APPLIED if result.applied else EventOutcome.REJECTED, signal_type=gate.signal_type,
            detail=detail,
            commit=result.commit if result.applied else None,
            audit="autofix.patch_applied" if result.applied else None)])
        return result.commit if result.applied else None

    async def _record_gate(self, inp: BuildRunInput, gate: GateView) -> None:
        await workflow.execute_local_activity("record_gate", GateRecord(tenant=inp.tenant, gate=gate),
                                              start_to_close_timeout=RECORD_TIMEOUT)
