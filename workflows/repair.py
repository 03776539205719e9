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
from metabuilder.domain.budgets import ShortAction
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
    ReserveInput,
    ReserveResult,
    RollbackInput,
    RollbackResult,
    SlaEvent,
    SlaRecord,
    StepResult,
    VerifyInput,
    VerifyResult,
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
from metabuilder.domain.sla import LADDER_RUNGS_BY_DEPTH, rungs_allowed, smallest_passing
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

RESERVE_LLM_BUDGET = "reserve-llm-budget"
"""Histories recorded before it call the LLM fixer without a budget reservation."""
LOG_TAIL_CHARS = 6_000
"""What of the failed step's log tail an LLM prompt carries (``adapters.llm.build_messages``)."""

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
        self.depth_limited = False
        """The run's SLA class limits the rungs climbed (``domain.sla.rungs_allowed``)."""
        self.best_of = 1
        """LLM patches generated and verified at once (the SLA class's ``candidates``)."""
        self.budget_short = False
        """The last LLM call was refused by a budget (recorded on the timeline already)."""
        self.budget_stop: str | None = None
        """A budget that ends the climb (time or attempts used up): the escalation's reason."""

    @workflow.run
    async def run(self, inp: RepairInput) -> RepairResult:
        if inp.sla is not None:  # the markers first, before any local activity
            self.depth_limited = workflow.patched("sla-repair-depth")
            self.best_of = inp.sla.candidates if workflow.patched("sla-best-of-n") else 1
        try:
            return await self._climb()
        except StepCancelled as err:
            raise asyncio.CancelledError() from err

    async def _climb(self) -> RepairResult:
        """The ladder after its retry rung, top-down: the first rung that ends the climb decides.
        The run's SLA class may stop it early: its repair depth says how many of patch, re-plan and
        rollback are climbed (the flake check and the escalation always are)."""
        rungs = {"patch": self._patch, "replan": self._replan, "rollback": self._rollback}
        if self.depth_limited and self.inp.sla is not None:
            allowed = rungs_allowed(self.inp.sla.repair_depth)
            skipped = [name for name in LADDER_RUNGS_BY_DEPTH if name not in allowed]
            rungs = {name: rung for name, rung in rungs.items() if name in allowed}
            if skipped:
                await self._sla_event("sla.depth", "depth", (
                    f"{self.inp.sla.sla_class} run: repair depth {self.inp.sla.repair_depth}, "
                    f"{', '.join(skipped)} not climbed"),
                    {"repair_depth": self.inp.sla.repair_depth, "rungs": list(allowed), "skipped": skipped})
        for rung in (self._flake_check, *rungs.values()):
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
            patch = await (self._best_of_n(choice) if choice.fixer is Fixer.LLM and self.best_of > 1
                           else self._propose(choice))
            if self.budget_stop is not None:
                return await self._escalate(self.budget_stop)
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

    async def _escalate(self, reason: str = "") -> RepairResult:
        """Hand the failure to a person, with the patch held for the gate if there is one."""
        reason = reason or escalation_reason(self.signal, self.inp.step.name, self.proposal)
        await self._emit(Rung.ESCALATE, EventOutcome.ESCALATED, self.signal, None, reason, audit="autofix.escalated")
        return self._done(RepairOutcome.ESCALATED, reason=reason, proposal=self.proposal)

    # --- the patch rung's steps ---

    async def _propose(self, choice: FixerChoice) -> PatchProposal | None:
        """Ask the fixer for a patch; None (recorded) when it has none."""
        patch = await self._proposal_of(choice)
        if patch.fixer is Fixer.LLM and not patch.diff and self.budget_short:
            return None  # recorded as the budget's refusal
        if patch.diff:
            return patch
        await self._emit(Rung.PATCH, EventOutcome.NO_PATCH, self.signal, None,
                         f"{choice.fixer}: {patch.summary}{_sent(patch)}")
        return None

    async def _best_of_n(self, choice: FixerChoice) -> PatchProposal | None:
        """Best of N (a Thorough run): N LLM proposals at once, each verified by re-running the
        failed step with it in a checkout of its own; the smallest that passes goes on to the
        sandbox and the run branch like any patch. None (recorded) when none passes."""
        n, label = self.best_of, f"fix-{self.seq}-{choice.fixer}"
        proposals = await asyncio.gather(*(self._proposal_of(choice, candidate=k, label=f"{label}-{k}")
                                           for k in range(n)))
        with_diff = [(k, p) for k, p in enumerate(proposals) if p.diff]
        verified: list[VerifyResult] = list(await asyncio.gather(*(self._verify(k, p) for k, p in with_diff)))
        chosen = smallest_passing([(v.candidate, v.passed, v.changed_lines) for v in verified])
        cost = round(sum(p.cost_usd for p in proposals), 6)
        passed = [v.candidate for v in verified if v.passed]
        summary = (f"{n} candidate patch(es) made, {len(with_diff)} with a diff, {len(passed)} passed the step"
                   f", ${cost:.4f}; " + (f"candidate {chosen} chosen (the smallest that passed, "
                                         f"{next(v.changed_lines for v in verified if v.candidate == chosen)} "
                                         "changed lines)" if chosen is not None else "none chosen"))
        await self._sla_event("patch.candidates", label, summary, {
            "made": n, "with_diff": len(with_diff), "passed": len(passed), "cost_usd": cost, "chosen": chosen,
            "candidates": [{"candidate": v.candidate, "passed": v.passed, "changed_lines": v.changed_lines,
                            "exit_code": v.exit_code, "reason": v.reason, "model": proposals[v.candidate].model,
                            "cost_usd": proposals[v.candidate].cost_usd} for v in verified]})
        if chosen is None:
            await self._emit(Rung.PATCH, EventOutcome.NO_PATCH, self.signal, None, f"{choice.fixer}: {summary}")
            return None
        best = proposals[chosen]
        return replace(best, summary=f"{best.summary}; best of {n}: {summary}", cost_usd=cost)

    async def _verify(self, candidate: int, patch: PatchProposal) -> VerifyResult:
        inp = self.inp
        try:
            result: VerifyResult = await workflow.execute_activity(
                "verify_candidate", VerifyInput(
                    run=inp.run.ref, step_index=inp.step_index, step=inp.step, commit=self.commit, proposal=patch,
                    candidate=candidate, write_scope=list(inp.plan.write_scope),
                    protected_checks=list(inp.plan.protected_checks), signal_type=self.signal.type.value),
                result_type=VerifyResult, task_queue=self._queue(inp.step.queue),
                start_to_close_timeout=timedelta(seconds=inp.step.timeout_seconds) + REPAIR_ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY)
            return result
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise StepCancelled() from err
            return VerifyResult(candidate=candidate, passed=False, reason=f"not verified: {failure_message(err)}")

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

    async def _proposal_of(self, choice: FixerChoice, *, candidate: int = 0, label: str = "") -> PatchProposal:
        inp, step, fixer = self.inp, self.inp.step, choice.fixer
        fix = FixInput(run=inp.run.ref, step_index=inp.step_index, step=step, commit=self.commit, fixer=fixer,
                       command=choice.command, signal=self.signal, log_tail=inp.failed.log_tail,
                       label=label or f"fix-{self.seq}-{fixer}",
                       model_tier=inp.sla.model_tier.value if inp.sla else None, candidate=candidate)
        patch: PatchProposal
        if fixer is Fixer.LLM and workflow.patched(RESERVE_LLM_BUDGET):
            reserved = await self._reserve(fix)
            self.budget_short = not reserved.reserved
            if self.budget_short:
                return await self._budget_short(reserved)
            fix = replace(fix, reservation=reserved.reservation,
                          model=reserved.model if reserved.model_reason else "", model_reason=reserved.model_reason)
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

    async def _reserve(self, fix: FixInput) -> ReserveResult:
        """Reserve the LLM call's worst case against the run's and tenant's budgets before it is scheduled."""
        inp = self.inp
        result: ReserveResult = await workflow.execute_local_activity(
            "reserve_budget", ReserveInput(
                run_id=inp.run.run_id, tenant=inp.run.tenant, reservation=f"{inp.run.run_id}/{fix.label}",
                step=inp.step.name, prompt_chars=len(fix.log_tail[-LOG_TAIL_CHARS:]) + len(inp.step.command),
                model_tier=fix.model_tier),
            result_type=ReserveResult, start_to_close_timeout=RECORD_TIMEOUT)
        return result

    async def _budget_short(self, short: ReserveResult) -> PatchProposal:
        """A budget cannot hold the LLM call: on the timeline, and the run goes on without it
        (money or tokens short: the rest of the ladder) or stops at a person (time or attempts)."""
        what = (f"budget short for the LLM call ({short.model}, worst case ${short.cost_usd:.4f}, "
                f"{short.tokens} tokens): {short.shortfall}")
        if short.action == ShortAction.SKIP_LLM:
            detail = f"{what}; the LLM is skipped, the ladder goes on without it"
        else:
            detail = f"{what}; the run stops ({ShortAction.STOP.value})"
            self.budget_stop = f"{ShortAction.STOP.value}: {short.shortfall}"
        await self._emit(Rung.PATCH, EventOutcome.BUDGET_EXHAUSTED, self.signal, None, detail)
        return PatchProposal(fixer=Fixer.LLM, diff="", summary=detail)

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

    async def _sla_event(self, kind: str, key: str, summary: str, data: dict[str, object]) -> None:
        inp = self.inp
        assert inp.sla is not None
        event = SlaEvent(kind=kind, key=f"{workflow.info().workflow_id}/{key}", at=workflow.now(), summary=summary,
                         step=inp.step.name, data={"sla": inp.sla.sla_class.value, **data})
        await workflow.execute_local_activity("record_sla", SlaRecord(run_id=inp.run.run_id, tenant=inp.run.tenant,
                                                                      events=[event]),
                                              start_to_close_timeout=RECORD_TIMEOUT)

    def _done(self, outcome: RepairOutcome, *, result: StepResult | None = None, delta: PlanDelta | None = None,
              reason: str = "", proposal: GateProposal | None = None) -> RepairResult:
        return RepairResult(outcome=outcome, retry_state=replace(self.budget), attempt_base=self.attempt_base,
                            seq=self.seq, events=self.events, result=result, delta=delta, reason=reason,
                            proposal=proposal)


def _sent(patch: PatchProposal) -> str:
    """What the fixer was shown, for the timeline (the LLM's context files and why each went)."""
    sent = f" [sent: {', '.join(patch.context)}]" if patch.context else ""
    return sent + (f" [model: {patch.model_reason}]" if patch.model_reason else "")
