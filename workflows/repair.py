"""``RepairWorkflow``: one child workflow per failed step, climbing the repair ladder.

The ladder is retry -> patch -> re-plan -> rollback -> escalate (:data:`domain.repair.LADDER`
says which rungs each failure class may use). The retry rung is over when this starts: it lives
inside the step activity, as Temporal's retries typed by the failure class (see
:mod:`workflows.execution`). This child climbs the rest, while the run's budget lasts: an
unchanged re-run of a failed test (a pass means *flaky*), patches (deterministic fixers first,
then the LLM; each checked by the sandbox, applied as a commit, the step re-run on it), a plan
change (handed back to the parent, which owns the plan), a rollback, and escalation.

A patch the ladder may not apply itself (one for an UNKNOWN failure, or one that would weaken a
protected check) ends the climb: it goes with the escalation, and the person at the gate decides.
The decisions are the domain's (:mod:`domain.repair`); this workflow only sequences them.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception

from metabuilder.domain.approvals import GateProposal
from metabuilder.domain.outcomes import EventOutcome, Fixer, RepairOutcome, Strategy
from metabuilder.domain.payloads import (
    ApplyInput,
    ApplyResult,
    AutofixEvent,
    AutofixRecord,
    FixInput,
    PatchProposal,
    RepairInput,
    RepairResult,
    RollbackInput,
    RollbackResult,
    StepResult,
)
from metabuilder.domain.plans import Queue
from metabuilder.domain.repair import (
    PROPOSE_AT_GATE,
    FixerChoice,
    PlanDelta,
    Rung,
    allows,
    can_roll_back,
    escalation_reason,
    fixers_for,
    may_patch,
    propose_replan,
    same_failure,
)
from metabuilder.domain.runs import task_queue
from metabuilder.domain.sandbox import Verdict
from metabuilder.domain.signals import FailureSignal
from metabuilder.workflows.execution import (
    RECORD_TIMEOUT,
    REPAIR_ACTIVITY_TIMEOUT,
    Execution,
    StepCancelled,
    execute_step,
    failure_message,
)

ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
LLM_QUEUE_WAIT = timedelta(minutes=10)
"""How long an LLM proposal may wait for an ``llm`` worker before the ladder goes on without it."""

RungResult = RepairResult | None
"""A rung either ends the climb (its result goes to the parent) or passes the failure on (None)."""


@workflow.defn
class RepairWorkflow:
    @workflow.init
    def __init__(self, inp: RepairInput) -> None:
        self.inp = inp
        self.budget = replace(inp.retry_state, per_step_attempts=dict(inp.retry_state.per_step_attempts))
        self.seq, self.attempt_base = inp.seq, inp.attempt_base
        self.events: list[AutofixEvent] = []
        self.signal = inp.signal
        """The failure as it stands now (a re-run or a patch may change it)."""
        self.commit = inp.commit
        """The commit the next re-run starts from: the last good one, or the last applied patch."""
        self.proposal: GateProposal | None = None
        """A patch held for the person at the gate."""

    @workflow.run
    async def run(self, inp: RepairInput) -> RepairResult:
        try:
            return await self._climb()
        except StepCancelled as err:
            raise asyncio.CancelledError() from err

    async def _climb(self) -> RepairResult:
        """The ladder after its retry rung, top-down: the first rung that ends the climb decides."""
        for rung in (self._flake_check, self._patch, self._replan, self._rollback):
            if (result := await rung()) is not None:
                return result
        return await self._escalate()

    # --- the rungs ---

    async def _flake_check(self) -> RungResult:
        """An unchanged re-run of a failed test: a pass means flaky, not fixed."""
        before = self.signal
        if not (allows(before.type, Rung.FLAKE_CHECK) and self.budget.spend(self.inp.step.name)):
            return None
        ex = await self._rerun()
        if ex.ok:
            await self._emit(Rung.FLAKE_CHECK, EventOutcome.FLAKY, before, ex.result,
                             "passed on an unchanged re-run: recorded as flaky, not fixed")
            return self._done(RepairOutcome.FLAKY, result=ex.result)
        self.signal = ex.result.signal or before
        await self._emit(Rung.FLAKE_CHECK, EventOutcome.FAILED_AGAIN, self.signal, ex.result,
                         "failed the same way on an unchanged re-run" if same_failure(before, self.signal)
                         else f"failed differently on an unchanged re-run ({self.signal.type})")
        return None

    async def _patch(self) -> RungResult:
        """Each fixer in turn (deterministic first, the LLM last): propose, check, apply, re-run."""
        for choice in fixers_for(self.signal, self.inp.step):
            if not may_patch(self.signal, self.inp.step.name, self.budget):
                await self._emit(Rung.PATCH, EventOutcome.BUDGET_EXHAUSTED, self.signal, None,
                                 "no attempts left for patches")
                return None
            patch = await self._propose(choice)
            if patch is None:
                continue
            applied = await self._apply(choice, patch)
            if applied is None:
                continue
            if not applied.applied:
                return await self._escalate()  # held for the gate
            ex = await self._rerun()
            if ex.ok:
                await self._emit(Rung.PATCH, EventOutcome.FIXED, self.signal, ex.result,
                                 f"step passed after the {choice.fixer} patch")
                return self._done(RepairOutcome.FIXED, result=ex.result)
            if not await self._failed_after_patch(ex):
                return None
        return None

    async def _replan(self) -> RungResult:
        """A plan change (insert a step, use the fallback, skip an optional step), made by the parent."""
        delta = propose_replan(self.signal, self.inp.step, set(self.inp.applied_deltas), self.inp.plan.repair)
        if delta is None or not self.budget.spend(self.inp.step.name):
            return None
        await self._emit(Rung.REPLAN, EventOutcome.REPLANNED, self.signal, None, f"{delta.kind}: {delta.reason}",
                         audit="autofix.replanned")
        return self._done(RepairOutcome.REPLAN, delta=delta, reason=delta.reason)

    async def _rollback(self) -> RungResult:
        """Reset the branch to the last good commit and run the completed steps' rollback commands."""
        inp, signal = self.inp, self.signal
        if not can_roll_back(signal.type, inp.rollback_steps, inp.commit, self.commit):
            return None
        rolled = await workflow.execute_activity(
            "rollback", RollbackInput(run=inp.run.ref, last_good_commit=inp.commit, commands=list(inp.rollback_steps)),
            result_type=RollbackResult, task_queue=self._queue(inp.step.queue),
            start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY)
        if not rolled.ok:
            await self._emit(Rung.ROLLBACK, EventOutcome.FAILED, signal, None, rolled.error or "rollback failed")
            return None
        ran = ", ".join(rolled.ran) or "no rollback commands"
        reason = f"{signal.type} in {inp.step.name!r} could not be repaired; rolled back ({ran})"
        await self._emit(Rung.ROLLBACK, EventOutcome.ROLLED_BACK, signal, None, reason, commit=inp.commit,
                         audit="autofix.rolled_back")
        return self._done(RepairOutcome.ROLLED_BACK, reason=reason)

    async def _escalate(self) -> RepairResult:
        """Hand the failure to a person, with the patch held for the gate if there is one."""
        reason = escalation_reason(self.signal, self.inp.step.name, self.proposal)
        await self._emit(Rung.ESCALATE, EventOutcome.ESCALATED, self.signal, None, reason, audit="autofix.escalated")
        return self._done(RepairOutcome.ESCALATED, reason=reason, proposal=self.proposal)

    # --- the patch rung's steps ---

    async def _propose(self, choice: FixerChoice) -> PatchProposal | None:
        """Ask the fixer for a patch; None (recorded) when it has none."""
        patch = await self._proposal_of(choice)
        if patch.diff:
            return patch
        await self._emit(Rung.PATCH, EventOutcome.NO_PATCH, self.signal, None,
                         f"{choice.fixer}: {patch.summary}{_sent(patch)}")
        return None

    async def _apply(self, choice: FixerChoice, patch: PatchProposal) -> ApplyResult | None:
        """Check a patch and apply it as a commit; None (recorded) when the sandbox refuses it. A
        patch that is checked but not applied is held for the gate (``self.proposal``)."""
        inp, signal, seq = self.inp, self.signal, self._next_seq()
        propose_only = signal.type in PROPOSE_AT_GATE
        applied: ApplyResult = await workflow.execute_activity(
            "apply_patch", ApplyInput(
                run=inp.run.ref, step_index=inp.step_index, step_name=inp.step.name, commit=self.commit,
                proposal=patch, write_scope=list(inp.plan.write_scope), seq=seq, signal_type=signal.type,
                protected_checks=list(inp.plan.protected_checks), propose_only=propose_only),
            result_type=ApplyResult, task_queue=self._queue(inp.step.queue),
            start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY)
        verdict = applied.verdict or (Verdict.ALLOWED if applied.applied else Verdict.REFUSED)
        if verdict == Verdict.REFUSED:
            await self._emit(Rung.PATCH, EventOutcome.REJECTED, signal, None,
                             f"{choice.fixer} patch rejected: {'; '.join(applied.problems)}{_sent(patch)}", seq=seq)
            return None
        if not applied.applied:
            self.proposal = await self._held(choice, patch, applied, seq)
            return applied
        self.budget.charge(inp.step.name)
        self.commit = applied.commit
        await self._emit(Rung.PATCH, EventOutcome.APPLIED, signal, None,
                         f"{choice.fixer} patch applied to {', '.join(applied.files)}{_sent(patch)}",
                         commit=self.commit, audit="autofix.patch_applied", seq=seq)
        return applied

    async def _failed_after_patch(self, ex: Execution) -> bool:
        """Record a re-run that still failed; whether the next fixer should be tried."""
        before, after = self.signal, ex.result.signal or self.signal
        if same_failure(before, after):
            await self._emit(Rung.PATCH, EventOutcome.STUCK, after, ex.result,
                             "same failure after the patch: no more patches for this step")
            return False
        await self._emit(Rung.PATCH, EventOutcome.FAILED_AGAIN, after, ex.result, f"now failing with {after.type}")
        self.signal = after
        return True

    async def _held(self, choice: FixerChoice, patch: PatchProposal, applied: ApplyResult, seq: int) -> GateProposal:
        """A patch the ladder may not apply: record why on the timeline and keep it for the gate."""
        signal = self.signal
        high_risk = applied.verdict == Verdict.GATE
        why = (f"it would weaken a protected check: {'; '.join(applied.problems)}" if high_risk
               else f"{signal.type} failures are only patched with a person's approval")
        await self._emit(Rung.PATCH, EventOutcome.NEEDS_APPROVAL, signal, None,
                         f"{choice.fixer} patch to {', '.join(applied.files)} not applied: {why}{_sent(patch)}",
                         seq=seq)
        return GateProposal(seq=seq, fixer=choice.fixer, diff=patch.diff, base_commit=self.commit,
                            files=list(applied.files), high_risk=high_risk,
                            findings=list(applied.problems) if high_risk else [])

    async def _proposal_of(self, choice: FixerChoice) -> PatchProposal:
        inp, step, fixer = self.inp, self.inp.step, choice.fixer
        fix = FixInput(run=inp.run.ref, step_index=inp.step_index, step=step, commit=self.commit, fixer=fixer,
                       command=choice.command, signal=self.signal, log_tail=inp.failed.log_tail,
                       label=f"fix-{self.seq}-{fixer}")
        patch: PatchProposal
        try:
            if fixer is Fixer.LLM:
                patch = await workflow.execute_activity(
                    "propose_llm_patch", fix, result_type=PatchProposal, task_queue=self._queue(Queue.LLM),
                    schedule_to_start_timeout=LLM_QUEUE_WAIT, start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY)
            else:
                patch = await workflow.execute_activity(
                    "propose_fix", fix, result_type=PatchProposal, task_queue=self._queue(step.queue),
                    start_to_close_timeout=timedelta(seconds=step.timeout_seconds) + REPAIR_ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY)
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise StepCancelled() from err
            return PatchProposal(fixer=fixer, diff="", summary=f"the fixer failed: {failure_message(err)}")
        return patch

    # --- helpers ---

    def _queue(self, pool: str) -> str:
        return task_queue(self.inp.run.task_queue_prefix, pool)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    async def _rerun(self) -> Execution:
        """Run the failed step again from ``self.commit`` (with its own per-class retries)."""
        step = self.inp.step
        ex = await execute_step(self.inp.run, self.inp.step_index, step, self.commit,
                                attempt_base=self.attempt_base, budget=self.budget.remaining(step.name))
        self.attempt_base += ex.attempts
        self.budget.record_execution(step.name, ex.result.temporal_attempts)
        return ex

    async def _emit(self, rung: Rung, outcome: EventOutcome, signal: FailureSignal, result: StepResult | None,
                    detail: str, *, commit: str | None = None, audit: str | None = None,
                    seq: int | None = None) -> None:
        """Add a timeline entry and write it (with the retry state) at once."""
        event = AutofixEvent(
            seq=self._next_seq() if seq is None else seq, at=workflow.now(), step=self.inp.step.name,
            strategy=Strategy(rung), outcome=outcome, signal_type=signal.type, confidence=signal.confidence,
            attempt=result.attempt if result else self.attempt_base, detail=detail,
            commit=commit or (result.commit if result else None) or None, fingerprint=signal.fingerprint,
            evidence=[e.text for e in signal.evidence[:3]], audit=audit)
        self.events.append(event)
        await workflow.execute_local_activity(
            "record_autofix", AutofixRecord(run_id=self.inp.run.run_id, tenant=self.inp.run.tenant, events=[event],
                                            retry_state=self.budget),
            start_to_close_timeout=RECORD_TIMEOUT)

    def _done(self, outcome: RepairOutcome, *, result: StepResult | None = None, delta: PlanDelta | None = None,
              reason: str = "", proposal: GateProposal | None = None) -> RepairResult:
        return RepairResult(outcome=outcome, retry_state=replace(self.budget), attempt_base=self.attempt_base,
                            seq=self.seq, events=self.events, result=result, delta=delta, reason=reason,
                            proposal=proposal)


def _sent(patch: PatchProposal) -> str:
    """What the fixer was shown, for the timeline (the LLM's context files and why each went)."""
    return f" [sent: {', '.join(patch.context)}]" if patch.context else ""
