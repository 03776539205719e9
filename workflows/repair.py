"""``RepairWorkflow``: one child workflow per failed step, climbing the repair ladder.

The step's own Temporal retries (the retry rung) are over when this starts. It then tries, each
only where the failure class allows it (:data:`domain.repair.LADDER`) and while the run's budget
lasts: an unchanged re-run of a failed test (a pass means *flaky*), patches (deterministic fixers
first, then the LLM; each checked by the sandbox, applied as a commit, the step re-run on it),
a plan change (handed back to the parent, which owns the plan), a rollback, and escalation.

A patch the ladder may not apply itself (one for an UNKNOWN failure, or one that would weaken a
protected check) ends the climb: it goes with the escalation, and the person at the gate decides.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from metabuilder.domain.approvals import GateProposal
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
from metabuilder.domain.repair import PROPOSE_AT_GATE, Fixer, FixerChoice, PlanDelta, Rung, allows, fixers_for, propose_replan
from metabuilder.domain.runs import task_queue
from metabuilder.domain.sandbox import Verdict
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType
from metabuilder.workflows.execution import RECORD_TIMEOUT, REPAIR_ACTIVITY_TIMEOUT, Execution, StepCancelled, execute_step

ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
LLM_QUEUE_WAIT = timedelta(minutes=10)
"""How long an LLM proposal may wait for an ``llm`` worker before the ladder goes on without it."""


@workflow.defn
class RepairWorkflow:
    @workflow.run
    async def run(self, inp: RepairInput) -> RepairResult:
        try:
            return await self._climb(inp)
        except StepCancelled as err:
            raise asyncio.CancelledError() from err

    async def _climb(self, inp: RepairInput) -> RepairResult:
        self.inp = inp
        self.state = replace(inp.retry_state, per_step_attempts=dict(inp.retry_state.per_step_attempts))
        self.seq, self.attempt_base = inp.seq, inp.attempt_base
        self.events: list[AutofixEvent] = []
        self.pending: list[AutofixEvent] = []
        step, signal, commit = inp.step, inp.signal, inp.commit

        if allows(signal.type, Rung.FLAKE_CHECK) and self._spend():
            ex = await self._rerun(commit)
            if ex.ok:
                await self._emit(Rung.FLAKE_CHECK, "flaky", signal, ex.result,
                                 "passed on an unchanged re-run: recorded as flaky, not fixed")
                return self._done("flaky", result=ex.result)
            again = ex.result.signal or signal
            await self._emit(Rung.FLAKE_CHECK, "failed_again", again, ex.result,
                             "failed the same way on an unchanged re-run" if again.fingerprint == signal.fingerprint
                             else f"failed differently on an unchanged re-run ({again.type})")
            signal = again

        proposal: GateProposal | None = None
        for choice in fixers_for(signal, step):
            propose_only = signal.type in PROPOSE_AT_GATE
            if not propose_only and not self.state.remaining(step.name):
                await self._emit(Rung.PATCH, "budget_exhausted", signal, None, "no attempts left for patches")
                break
            patch = await self._propose(choice.fixer, choice.command, commit, signal)
            if not patch.diff:
                await self._emit(Rung.PATCH, "no_patch", signal, None, f"{choice.fixer}: {patch.summary}{_sent(patch)}")
                continue
            seq = self._next_seq()
            applied = await workflow.execute_activity(
                "apply_patch", ApplyInput(
                    run_id=inp.run.run_id, tenant=inp.run.tenant, step_index=inp.step_index, step_name=step.name,
                    repo_url=inp.run.workspace.repo_url, branch=inp.run.workspace.branch, commit=commit,
                    proposal=patch, write_scope=list(inp.plan.write_scope), seq=seq,
                    signal_type=signal.type.value, protected_checks=list(inp.plan.protected_checks),
                    propose_only=propose_only),
                result_type=ApplyResult, task_queue=self._queue(step.queue.value),
                start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY)
            verdict = applied.verdict or (Verdict.ALLOWED if applied.applied else Verdict.REFUSED)
            if verdict == Verdict.REFUSED:
                await self._emit(Rung.PATCH, "rejected", signal, None,
                                 f"{choice.fixer} patch rejected: {'; '.join(applied.problems)}{_sent(patch)}",
                                 seq=seq)
                continue
            if not applied.applied:
                proposal = await self._held(choice, patch, applied, signal, commit, seq)
                break
            self.state.charge(step.name)
            commit = applied.commit
            await self._emit(Rung.PATCH, "applied", signal, None,
                             f"{choice.fixer} patch applied to {', '.join(applied.files)}{_sent(patch)}",
                             commit=commit, audit="autofix.patch_applied", seq=seq)
            ex = await self._rerun(commit)
            if ex.ok:
                await self._emit(Rung.PATCH, "fixed", signal, ex.result, f"step passed after the {choice.fixer} patch")
                return self._done("fixed", result=ex.result)
            after = ex.result.signal or signal
            if after.fingerprint == signal.fingerprint:
                await self._emit(Rung.PATCH, "stuck", after, ex.result,
                                 "same failure after the patch: no more patches for this step")
                break
            await self._emit(Rung.PATCH, "failed_again", after, ex.result, f"now failing with {after.type}")
            signal = after

        if proposal is not None:
            return await self._escalate(signal, proposal)

        delta = propose_replan(signal, step, set(inp.applied_deltas), inp.plan.repair)
        if delta is not None and self._spend():
            await self._emit(Rung.REPLAN, "replanned", signal, None, f"{delta.kind}: {delta.reason}",
                             audit="autofix.replanned")
            return self._done("replan", delta=delta, reason=delta.reason)

        if allows(signal.type, Rung.ROLLBACK) and (inp.rollback_steps or commit != inp.commit):
            rolled = await workflow.execute_activity(
                "rollback", RollbackInput(
                    run_id=inp.run.run_id, repo_url=inp.run.workspace.repo_url, branch=inp.run.workspace.branch,
                    last_good_commit=inp.commit, commands=list(inp.rollback_steps)),
                result_type=RollbackResult, task_queue=self._queue(step.queue.value),
                start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT, retry_policy=ACTIVITY_RETRY)
            if rolled.ok:
                ran = ", ".join(rolled.ran) or "no rollback commands"
                reason = f"{signal.type} in {step.name!r} could not be repaired; rolled back ({ran})"
                await self._emit(Rung.ROLLBACK, "rolled_back", signal, None, reason, commit=inp.commit,
                                 audit="autofix.rolled_back")
                return self._done("rolled_back", reason=reason)
            await self._emit(Rung.ROLLBACK, "failed", signal, None, rolled.error or "rollback failed")

        return await self._escalate(signal, None)

    async def _held(self, choice: FixerChoice, patch: PatchProposal, applied: ApplyResult, signal: FailureSignal,
                    commit: str, seq: int) -> GateProposal:
        """A patch the ladder may not apply: record why on the timeline and keep it for the gate."""
        high_risk = applied.verdict == Verdict.GATE
        why = (f"it would weaken a protected check: {'; '.join(applied.problems)}" if high_risk
               else f"{signal.type} failures are only patched with a person's approval")
        await self._emit(Rung.PATCH, "needs_approval", signal, None,
                         f"{choice.fixer} patch to {', '.join(applied.files)} not applied: {why}{_sent(patch)}",
                         seq=seq)
        return GateProposal(seq=seq, fixer=choice.fixer.value, diff=patch.diff, base_commit=commit,
                            files=list(applied.files), high_risk=high_risk,
                            findings=list(applied.problems) if high_risk else [])

    async def _escalate(self, signal: FailureSignal, proposal: GateProposal | None) -> RepairResult:
        step = self.inp.step
        if signal.requires_approval:
            reason = f"{signal.type} needs a person's decision"
        elif signal.type is FailureType.UNKNOWN:
            reason = f"{signal.type} in {step.name!r} after its retries needs a person's decision"
        else:
            reason = f"{signal.type} in {step.name!r} could not be repaired automatically"
        if proposal is not None:
            reason += (f"; a {'high-risk ' if proposal.high_risk else ''}patch ({proposal.fixer}) to "
                       f"{', '.join(proposal.files)} is proposed: approving applies it and re-runs the step")
        await self._emit(Rung.ESCALATE, "escalated", signal, None, reason, audit="autofix.escalated")
        return self._done("escalated", reason=reason, proposal=proposal)

    # --- helpers ---

    def _queue(self, pool: str) -> str:
        return task_queue(self.inp.run.task_queue_prefix, pool)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq - 1

    def _spend(self) -> bool:
        """Charge one attempt if the budget allows it."""
        if not self.state.remaining(self.inp.step.name):
            return False
        self.state.charge(self.inp.step.name)
        return True

    async def _rerun(self, commit: str) -> Execution:
        ex = await execute_step(self.inp.run, self.inp.step_index, self.inp.step, commit,
                                attempt_base=self.attempt_base, budget=self.state.remaining(self.inp.step.name))
        self.attempt_base += ex.result.temporal_attempts
        self.state.record_execution(self.inp.step.name, ex.result.temporal_attempts)
        return ex

    async def _propose(self, fixer: Fixer, command: str | None, commit: str, signal: FailureSignal) -> PatchProposal:
        inp, step = self.inp, self.inp.step
        fix = FixInput(run_id=inp.run.run_id, step_index=inp.step_index, step=step, repo_url=inp.run.workspace.repo_url,
                       branch=inp.run.workspace.branch, commit=commit, fixer=fixer.value, command=command,
                       signal=signal, log_tail=inp.failed.log_tail, label=f"fix-{self.seq}-{fixer.value}")
        try:
            if fixer is Fixer.LLM:
                return await workflow.execute_activity(
                    "propose_llm_patch", fix, result_type=PatchProposal, task_queue=self._queue("llm"),
                    schedule_to_start_timeout=LLM_QUEUE_WAIT, start_to_close_timeout=REPAIR_ACTIVITY_TIMEOUT,
                    retry_policy=ACTIVITY_RETRY)
            return await workflow.execute_activity(
                "propose_fix", fix, result_type=PatchProposal, task_queue=self._queue(step.queue.value),
                start_to_close_timeout=timedelta(seconds=step.timeout_seconds) + REPAIR_ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY)
        except ActivityError as err:
            cause = err.cause.message if err.cause else err.message
            return PatchProposal(fixer=fixer.value, diff="", summary=f"the fixer failed: {cause}")

    async def _emit(self, rung: Rung, outcome: str, signal: FailureSignal, result: StepResult | None, detail: str,
                    *, commit: str | None = None, audit: str | None = None, seq: int | None = None) -> None:
        """Add a timeline entry and write it (with the retry state) at once."""
        event = AutofixEvent(
            seq=self._next_seq() if seq is None else seq, at=workflow.now().isoformat(), step=self.inp.step.name,
            strategy=rung.value, outcome=outcome, signal_type=signal.type.value, confidence=signal.confidence,
            attempt=result.attempt if result else self.attempt_base, detail=detail,
            commit=commit or (result.commit if result else None) or None, fingerprint=signal.fingerprint,
            evidence=[e.text for e in signal.evidence[:3]], audit=audit)
        self.events.append(event)
        await workflow.execute_local_activity(
            "record_autofix", AutofixRecord(run_id=self.inp.run.run_id, tenant=self.inp.run.tenant, events=[event],
                                            retry_state=self.state),
            start_to_close_timeout=RECORD_TIMEOUT)

    def _done(self, outcome: str, *, result: StepResult | None = None, delta: PlanDelta | None = None,
              reason: str = "", proposal: GateProposal | None = None) -> RepairResult:
        return RepairResult(outcome=outcome, retry_state=replace(self.state), attempt_base=self.attempt_base,
                            seq=self.seq, events=self.events, result=result, delta=delta, reason=reason,
                            proposal=proposal)


def _sent(patch: PatchProposal) -> str:
    """What the fixer was shown, for the timeline (the LLM's context files and why each went)."""
    return f" [sent: {', '.join(patch.context)}]" if patch.context else ""
