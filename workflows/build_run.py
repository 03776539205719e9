"""``BuildRunWorkflow``: one durable workflow per build run.

Steps run in plan order, each from the commit the previous one left. Without auto-fix (and for
runs started before it existed) the run stops at the first failure. With auto-fix, a failed
step has already been retried by class inside its activity (see :mod:`workflows.execution`);
if it is still red, a ``RepairWorkflow`` child climbs the repair ladder and tells this workflow
how it ended: fixed, flaky, a plan change to make, rolled back, or escalated.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError, is_cancelled_exception

from metabuilder.domain.approvals import GateAction, GateKind
from metabuilder.domain.outcomes import EventOutcome, RepairOutcome
from metabuilder.domain.payloads import (
    RUN_FAILED,
    AutofixEvent,
    AutofixRecord,
    BreakerWait,
    BuildRunInput,
    FailedStep,
    LadderRules,
    RepairInput,
    RepairResult,
    RunRecord,
    RunView,
    SlaEvent,
    SlaRecord,
    StepResult,
    StepView,
)
from metabuilder.domain.plans import Step
from metabuilder.domain.policy import AttemptBudget
from metabuilder.domain.repair import DeltaKind, PlanDelta, apply_delta
from metabuilder.domain.runs import RunStatus, StepStatus, workflow_id
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.sla import WARN_FRACTION, SlaState
from metabuilder.workflows import search_attributes as sa
from metabuilder.workflows.execution import (
    RECORD_TIMEOUT,
    Execution,
    StepCancelled,
    classified_event,
    execute_step,
    failure_message,
    retry_events,
)
from metabuilder.workflows.gates import ApprovalGates
from metabuilder.workflows.priority import temporal_priority
from metabuilder.workflows.repair import RepairWorkflow


@dataclass
class _Slot:
    """A step in the run's (possibly re-planned) order, with its stable index for ids and records."""

    index: int
    step: Step
    attempts: int = 0
    """Executions of this step so far (the next one's attempt numbers start after it)."""
    approved: bool = False
    """A ``requires_approval`` step whose gate was approved (a re-run does not ask again)."""


@workflow.defn
class BuildRunWorkflow(ApprovalGates):
    @workflow.init
    def __init__(self, inp: BuildRunInput) -> None:
        self._view = RunView(
            run_id=inp.run_id, plan_name=inp.plan.name, tenant=inp.tenant, status=RunStatus.PENDING,
            steps=[StepView(name=s.name, queue=s.queue) for s in inp.plan.steps],
            base_commit=inp.workspace.base_commit, head_commit=inp.workspace.base_commit,
            branch=inp.workspace.branch,
        )
        self._run = inp.context()
        self._plan = inp.plan
        self._slots = [_Slot(i, s) for i, s in enumerate(inp.plan.steps)]
        self._view.retry_state = AttemptBudget.for_policy(inp.autofix.policy) if inp.autofix else None
        self._seq = 0
        self._repairs = 0
        self._verified_input = inp if inp.verify_approvers else None
        self._view.sla = inp.sla

    @workflow.run
    async def run(self, inp: BuildRunInput) -> RunView:
        # Before any local activity (a marker recorded after one that outlived its task fails to replay).
        monitor = inp.sla is not None and workflow.patched("sla-monitor")
        await self._set_status(inp, RunStatus.RUNNING)
        watch = asyncio.create_task(self._sla_monitor(inp)) if monitor else None
        try:
            return await self._steps(inp)
        finally:
            if watch is not None and not watch.done():
                watch.cancel()

    async def _steps(self, inp: BuildRunInput) -> RunView:
        pos = 0
        while pos < len(self._slots):
            slot, view = self._slots[pos], self._view.steps[pos]
            try:
                if inp.approval_gates and slot.step.requires_approval and not slot.approved:
                    await self._gate(inp, GateKind.STEP_APPROVAL, slot.step.name,
                                     f"step {slot.step.name!r} requires approval before it runs")
                    slot.approved = True
                view.status = StepStatus.RUNNING
                ex = await self._execute(inp, slot)
                if ex.ok:
                    self._succeeded(view, ex.result)
                    pos += 1
                    continue
                if ex.held_by is not None:
                    pos = await self._held(inp, pos, ex)
                    continue
                if inp.autofix is None or ex.result.signal is None:
                    await self._step_failed(inp, view, ex)
                    raise ApplicationError(self._view.error or "step failed", self._view,
                                           type=RUN_FAILED, non_retryable=True)
                pos = await self._repair(inp, pos, ex)
            except StepCancelled as err:
                await self._cancelled(inp, self._view.steps[pos])
                raise asyncio.CancelledError() from err
        await self._set_status(inp, RunStatus.SUCCEEDED)
        return self._view

    async def _sla_monitor(self, inp: BuildRunInput) -> None:
        """The run's SLA deadline: at 80% of its time budget a warning, at 100% a violation, each
        on the timeline (and the violation counted). The run goes on either way: its steps decide
        how it ends; the violation stays on its record and the alert fires."""
        assert inp.sla is not None
        budget = inp.sla.time_budget_seconds
        started = workflow.info().start_time  # the submission: what the class's budget is counted from
        self._view.sla_deadline = deadline = started + timedelta(seconds=budget)
        await self._sleep_until(started + timedelta(seconds=budget * WARN_FRACTION))
        self._view.sla_state = SlaState.WARNING.value
        await self._sla_event(inp, "sla.warning", f"{inp.sla.sla_class} run at {WARN_FRACTION:.0%} of its "
                              f"{budget:g}s time budget; deadline {self._view.sla_deadline.isoformat()}")
        await self._sleep_until(deadline)
        self._view.sla_state = SlaState.VIOLATED.value
        await self._sla_event(inp, "sla.violated", f"{inp.sla.sla_class} run passed its {budget:g}s time budget "
                              f"(deadline {self._view.sla_deadline.isoformat()}); it goes on, recorded as violated")

    @staticmethod
    async def _sleep_until(at: datetime) -> None:
        left = (at - workflow.now()).total_seconds()
        if left > 0:
            await workflow.sleep(left)

    async def _sla_event(self, inp: BuildRunInput, kind: str, summary: str) -> None:
        assert inp.sla is not None
        running = next((v.name for v in self._view.steps if v.status is StepStatus.RUNNING), None)
        event = SlaEvent(kind=kind, key="deadline", at=workflow.now(), summary=summary, step=running,
                         data={"sla": inp.sla.sla_class.value, "time_budget_seconds": inp.sla.time_budget_seconds,
                               "deadline": self._view.sla_deadline.isoformat() if self._view.sla_deadline else None})
        await workflow.execute_local_activity("record_sla", SlaRecord(run_id=inp.run_id, tenant=inp.tenant,
                                                                      events=[event]),
                                              start_to_close_timeout=RECORD_TIMEOUT)

    @workflow.query
    def status(self) -> RunView:
        """The run as it stands: status, each step's state, the head commit, the auto-fix timeline."""
        return self._view

    @property
    def _state(self) -> AttemptBudget | None:
        """The run's retry budgets and spending (None without auto-fix)."""
        return self._view.retry_state

    async def _execute(self, inp: BuildRunInput, slot: _Slot) -> Execution:
        budget = self._state.remaining(slot.step.name) if self._state else 0
        ex = await execute_step(self._run, slot.index, slot.step, self._view.head_commit,
                                attempt_base=slot.attempts, budget=budget,
                                on_wait=lambda wait: self._waiting(inp, wait))
        slot.attempts += ex.attempts
        if self._state is None:
            return ex
        self._state.record_execution(slot.step.name, ex.result.temporal_attempts)
        events = retry_events(slot.step.name, ex.result, self._seq)
        if ex.result.retries:
            self._state.last_backoff_seconds = ex.result.retries[-1].backoff_seconds
        if not ex.ok and ex.result.signal is not None:
            events.append(classified_event(slot.step.name, ex.result, self._seq + len(events), EventOutcome.FAILED))
        await self._record(inp, events)
        return ex

    async def _waiting(self, inp: BuildRunInput, wait: BreakerWait | None) -> None:
        """A step waits on a circuit breaker (``wait``), or goes on (None): the status says so."""
        self._view.waiting_on = wait.breaker if wait else None
        status = RunStatus.WAITING_ON_BREAKER if wait else RunStatus.RUNNING
        if self._view.status is not status:
            await self._set_status(inp, status)

    async def _held(self, inp: BuildRunInput, pos: int, ex: Execution) -> int:
        """A step waited on a breaker past the maximum: a person decides (or, without gates, the
        run fails); return the position to go on from."""
        slot, view = self._slots[pos], self._view.steps[pos]
        if not inp.approval_gates:
            await self._step_failed(inp, view, ex)
            raise ApplicationError(ex.reason, self._view, type=RUN_FAILED, non_retryable=True)
        gate = await self._gate(inp, GateKind.ESCALATION, slot.step.name, ex.reason)
        if gate.action is GateAction.OVERRIDE:
            view.status = StepStatus.OVERRIDDEN
            return pos + 1
        view.status = StepStatus.PENDING  # approved: wait again, or run when the breaker lets it
        return pos

    async def _repair(self, inp: BuildRunInput, pos: int, ex: Execution) -> int:
        """Hand a failed step to a ``RepairWorkflow`` child; return the position to go on from."""
        slot, view = self._slots[pos], self._view.steps[pos]
        assert self._state is not None and ex.result.signal is not None
        view.status, view.signal_type = StepStatus.FAILED, ex.result.signal.type
        view.exit_code, view.log_tail, view.attempt = ex.result.exit_code, ex.result.log_tail, ex.result.attempt
        result = await self._climb_ladder(inp, pos, FailedStep(signal=ex.result.signal, log_tail=ex.result.log_tail))
        self._view.retry_state = result.retry_state
        self._view.timeline.extend(result.events)
        self._seq = result.seq
        slot.attempts = result.attempt_base
        match result.outcome:
            case RepairOutcome.FIXED | RepairOutcome.FLAKY if result.result is not None:
                self._succeeded(view, result.result)
                view.flaky = result.outcome is RepairOutcome.FLAKY
                return pos + 1
            case RepairOutcome.REPLAN if result.delta is not None:
                return await self._replan(inp, pos, result.delta)
            case RepairOutcome.ESCALATED if inp.approval_gates:
                return await self._escalated(inp, pos, ex.result.signal, result)
        self._view.failed_step, self._view.error = slot.step.name, result.reason
        status = RunStatus.ROLLED_BACK if result.outcome is RepairOutcome.ROLLED_BACK else RunStatus.ESCALATED
        await self._set_status(inp, status)
        raise ApplicationError(result.reason, self._view, type=RUN_FAILED, non_retryable=True)

    async def _climb_ladder(self, inp: BuildRunInput, pos: int, failed: FailedStep) -> RepairResult:
        """Run the repair child for the step at ``pos``: only what its ladder needs goes with it."""
        slot = self._slots[pos]
        assert self._state is not None
        self._repairs += 1
        rollback = [s.step for s, v in zip(self._slots[:pos], self._view.steps[:pos], strict=True)
                    if v.status is StepStatus.SUCCEEDED and s.step.rollback_command]
        try:
            return await workflow.execute_child_workflow(
                RepairWorkflow.run,
                RepairInput(run=self._run, step_index=slot.index, step=slot.step, commit=self._view.head_commit,
                            failed=failed, plan=LadderRules.of(self._plan), retry_state=self._state,
                            attempt_base=slot.attempts, seq=self._seq,
                            applied_deltas=[f"{d.kind}:{d.step}" for d in self._view.plan_deltas],
                            rollback_steps=list(reversed(rollback)), sla=inp.sla),
                id=f"{workflow_id(inp.run_id)}-repair-{self._repairs}",
                priority=temporal_priority(inp.scheduling, slot.step),
            )
        except (asyncio.CancelledError, CancelledError, ChildWorkflowError) as err:
            if is_cancelled_exception(err):
                raise StepCancelled() from err
            assert isinstance(err, ChildWorkflowError)
            # A repair that breaks must not lose the run: a person takes over.
            return RepairResult(outcome=RepairOutcome.ESCALATED, retry_state=self._state,
                                attempt_base=slot.attempts, seq=self._seq,
                                reason=f"the repair of {slot.step.name!r} failed: {failure_message(err)}")

    async def _escalated(self, inp: BuildRunInput, pos: int, signal: FailureSignal, result: RepairResult) -> int:
        """The ladder gave up: a person decides at a gate; return the position to go on from."""
        slot, view = self._slots[pos], self._view.steps[pos]
        last = result.events[-1] if result.events else None
        signal_type = last.signal_type if last else signal.type
        evidence = last.evidence if last else [e.text for e in signal.evidence[:3]]
        gate = await self._gate(inp, GateKind.ESCALATION, slot.step.name, result.reason,
                                signal_type=signal_type, evidence=evidence, proposal=result.proposal)
        if gate.action is GateAction.OVERRIDE:
            view.status = StepStatus.OVERRIDDEN
            return pos + 1
        if gate.action is GateAction.APPLY_PATCH:
            self._view.head_commit = await self._apply_approved(inp, gate, slot.index, slot.step) \
                or self._view.head_commit
        view.status = StepStatus.PENDING
        return pos

    async def _replan(self, inp: BuildRunInput, pos: int, delta: PlanDelta) -> int:
        before = self._plan
        self._plan = apply_delta(before, delta)
        self._view.plan_deltas.append(delta)
        slot, view = self._slots[pos], self._view.steps[pos]
        next_pos = pos
        if delta.kind is DeltaKind.INSERT_STEP:
            assert delta.new_step is not None
            self._slots.insert(pos, _Slot(max(s.index for s in self._slots) + 1, delta.new_step))
            self._view.steps.insert(pos, StepView(name=delta.new_step.name, queue=delta.new_step.queue))
            view.status = StepStatus.PENDING
        elif delta.kind is DeltaKind.USE_FALLBACK:
            slot.step = next(s for s in self._plan.steps if s.name == delta.step)
            view.status = StepStatus.PENDING
        else:
            view.status, view.skipped = StepStatus.SKIPPED, True
            next_pos = pos + 1
        await workflow.execute_local_activity(
            "record_autofix", AutofixRecord(run_id=inp.run_id, tenant=inp.tenant, retry_state=self._state,
                                            delta=delta, delta_seq=len(self._view.plan_deltas),
                                            plan_before=before, plan_after=self._plan),
            start_to_close_timeout=RECORD_TIMEOUT)
        return next_pos

    def _succeeded(self, view: StepView, result: StepResult) -> None:
        view.status = StepStatus.SUCCEEDED
        view.exit_code, view.duration_seconds = result.exit_code, result.duration_seconds
        view.commit, view.attempt, view.log_tail = result.commit, result.attempt, result.log_tail
        self._view.head_commit = result.commit

    async def _record(self, inp: BuildRunInput, events: list[AutofixEvent]) -> None:
        if not events:
            return
        self._seq += len(events)
        self._view.timeline.extend(events)
        await workflow.execute_local_activity(
            "record_autofix", AutofixRecord(run_id=inp.run_id, tenant=inp.tenant, events=events,
                                            retry_state=self._state),
            start_to_close_timeout=RECORD_TIMEOUT)

    async def _step_failed(self, inp: BuildRunInput, view: StepView, ex: Execution) -> None:
        view.status = StepStatus.FAILED
        if ex.result.commit:  # the activity's own report (else the step could not be run at all)
            view.exit_code, view.duration_seconds = ex.result.exit_code, ex.result.duration_seconds
            view.attempt, view.log_tail = ex.result.attempt, ex.result.log_tail
            view.signal_type = ex.result.signal.type if ex.result.signal else None
        self._view.failed_step = view.name
        self._view.error = ex.reason
        await self._set_status(inp, RunStatus.FAILED)

    async def _cancelled(self, inp: BuildRunInput, view: StepView) -> None:
        view.status = StepStatus.CANCELLED
        self._view.error = "cancelled"
        await self._set_status(inp, RunStatus.CANCELLED)

    async def _set_status(self, inp: BuildRunInput, status: RunStatus) -> None:
        self._view.status = status
        if inp.search_attributes:
            workflow.upsert_search_attributes([sa.RUN_STATUS.value_set(status.value)])
        record = RunRecord(
            run_id=inp.run_id, tenant=inp.tenant, status=status, plan=self._plan, plan_source=inp.plan_source
            if self._plan is inp.plan else "", workflow_id=workflow_id(inp.run_id),
            repo_url=inp.workspace.repo_url, branch=inp.workspace.branch,
            base_commit=inp.workspace.base_commit, head_commit=self._view.head_commit,
            source=inp.workspace.source, failed_step=self._view.failed_step, error=self._view.error,
            iteration=inp.iteration, retry_of=inp.retry_of, settings=inp.settings(),
            source_branch=inp.workspace.source_branch,
        )
        await workflow.execute_local_activity("record_run", record, start_to_close_timeout=RECORD_TIMEOUT)
