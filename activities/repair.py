"""Activities of the repair ladder: propose a patch, apply it (after the sandbox check), roll back.

A proposal never changes the run branch: a fix command runs in the run's checkout and its
changes are captured as a diff and undone. Only ``apply_patch`` commits, and only a patch the
sandbox accepts, or a high-risk one a person approved at a gate; every other one is recorded
with its verdict, its reasons and the files it touches.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from metabuilder.activities.budgets import Metering
from metabuilder.activities.shapes import FirstShape, current
from metabuilder.activities.workspace import Workspace, write
from metabuilder.adapters.git import GitError
from metabuilder.adapters.llm import LlmError, LlmSettings, OnExchange, propose
from metabuilder.adapters.llm_context import MAX_TOTAL_BYTES
from metabuilder.domain.budget_settings import BudgetSettings
from metabuilder.domain.budgets import Dimension
from metabuilder.domain.models_catalogue import ModelChoice, ModelSpec, Tier, choose_model
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.payloads import (
    ApplyInput,
    ApplyResult,
    FixInput,
    PatchProposal,
    RollbackInput,
    RollbackResult,
    RunRef,
    SlaEvent,
    VerifyInput,
    VerifyResult,
)
from metabuilder.domain.privacy import (
    PLATFORM_DEFAULT,
    EffectivePrivacy,
    Privacy,
    host_of,
    llm_refusal,
    redact_messages,
)
from metabuilder.domain.protected import default_checks
from metabuilder.domain.sandbox import Verdict, changed_path_findings, path_problem, review_patch
from metabuilder.domain.sla import diff_size
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import budgets, governance, repository
from metabuilder.store import sla as sla_rows
from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction
from metabuilder.telemetry.metrics import timed_async

LLM_NOT_CONFIGURED = "no LLM endpoint is configured"
OUTPUT_TOKENS_BOUND = 4096
"""What a model choice assumes a patch's answer may take at most (its worst case's output)."""


def prompt_tokens_bound(log_tail: str) -> int:
    """An upper bound of a fixer prompt's tokens: the context files' cap, the log's end, the
    instructions, at one token per four bytes (``adapters.llm.build_messages``)."""
    return (MAX_TOTAL_BYTES + len(log_tail[-6000:].encode()) + 4000) // 4


def remaining_usd(sessions: sessionmaker[Session], platform: BudgetSettings, run_id: str, tenant: str,
                  at: datetime | None = None) -> float:
    """The money left for a run's next LLM call: the least of what its run budget and its
    tenant's day and month budgets have available, with the limits the settings give now
    (platform -> tenant -> run, ``store.budgets.remaining``); infinite when none is set."""
    return budgets.remaining(sessions, platform, run_id, tenant, at).of(Dimension.COST)


@dataclass
class RepairActivities:
    """The repair ladder's activities, given the worker's workspace (checkouts and command
    runner), the DB session factory and the LLM endpoint (optional)."""

    workspace: Workspace
    sessions: sessionmaker[Session]
    llm: LlmSettings | None = None
    on_exchange: Callable[[FixInput], OnExchange] | None = None
    """Given a proposal's input, what is told of its LLM exchange (the replay bundle)."""
    privacy: Privacy = PLATFORM_DEFAULT
    """The platform level of the privacy mode and allowlists (each tenant may set its own)."""
    catalogue: tuple[ModelSpec, ...] = ()
    """``META_V4_MODEL_CATALOGUE``: the models a run's SLA tier and money left choose from (empty: ``llm``'s)."""
    metering: Metering | None = None
    """Records each LLM call's tokens and cost and settles its budget reservation (None: not metered)."""
    drill_fail_patch: bool = False
    """``META_V4_CANARY_DRILL_FAIL_PATCH``: a canary drill's deliberate regression, every
    deterministic fixer of this worker proposes nothing (the patch rung fails)."""

    def _checkout(self, run: RunRef, commit: str):  # type: ignore[no-untyped-def]
        """The run's checkout at ``commit``, held while the block runs: ``(workdir, pgid file)``."""
        return self.workspace.checkout(run.run_id, run.repo_url, run.branch, commit)

    @activity.defn(name="propose_fix")
    @timed_async("propose_fix")
    async def propose_fix(self, inp: FixInput | FirstShape) -> PatchProposal:
        """Run a deterministic fixer (the step's fix command, ``alembic merge heads``) in the run's
        checkout at ``inp.commit`` and return what it changed as a diff; the checkout is left clean."""
        inp = current(FixInput, inp)
        assert inp.command is not None
        if self.drill_fail_patch:
            return PatchProposal(fixer=inp.fixer, diff="", summary="canary drill: this worker's patch rung "
                                 "fails (META_V4_CANARY_DRILL_FAIL_PATCH)")
        log_path = self.workspace.log_path(inp.run.run_id, inp.step_index, inp.step.name, inp.label or "fix")
        async with self._checkout(inp.run, inp.commit) as (workdir, pgid):
            code, timed_out, tail = await self.workspace.execute(
                inp.command, inp.step.timeout_seconds, workdir, log_path, pgid,
                self.workspace.step_env(inp.step.env, inp.run.run_id, inp.step.name, inp.commit, 0))
            diff, files = await self.workspace.git.capture_diff(inp.run.run_id)
        summary = f"`{inp.command}` exited {code}" + (" (timed out)" if timed_out else "")
        if code != 0 and not diff:
            summary += ": " + (tail.strip().splitlines() or [""])[-1][:200]
        return PatchProposal(fixer=inp.fixer, diff=diff, summary=summary + f"; {len(files)} file(s) changed")

    @activity.defn(name="propose_llm_patch")
    @timed_async("propose_llm_patch")
    async def propose_llm_patch(self, inp: FixInput | FirstShape) -> PatchProposal:
        """Ask the configured LLM for a patch (an empty diff when none is configured)."""
        inp = current(FixInput, inp)
        llm, why = self.llm, ""
        if inp.model_tier is not None and self.catalogue:
            choice = await asyncio.to_thread(self._choose, inp)
            why = choice.reason
            if choice.model is None:
                await self._release(inp)
                return PatchProposal(fixer=Fixer.LLM, diff="", summary=f"no model chosen: {why}", model_reason=why)
            base = self.llm or LlmSettings(url="", model="")
            llm = replace(base, url=choice.model.endpoint or base.url, model=choice.model.name,
                          price_in_per_million=choice.model.price_in_per_million,
                          price_out_per_million=choice.model.price_out_per_million)
        if llm is None or not llm.url:
            await self._release(inp)
            return PatchProposal(fixer=Fixer.LLM, diff="", summary=LLM_NOT_CONFIGURED, model_reason=why)
        privacy = await asyncio.to_thread(self._privacy, inp.run.tenant, inp.run.run_id)
        if refusal := llm_refusal(privacy, llm.url):
            await asyncio.to_thread(self._refused, inp, llm.url, refusal)
            await self._release(inp)
            return PatchProposal(fixer=Fixer.LLM, diff="", summary=f"LLM call refused: {refusal}")
        async with self._checkout(inp.run, inp.commit) as (workdir, _):
            try:
                proposal = await propose(llm, inp, workdir, self.on_exchange(inp) if self.on_exchange else None,
                                         prepare=lambda m: redact_messages(privacy, m))
            except LlmError as err:
                if not err.retryable:  # no answer will come: what was reserved for it goes back now
                    await self._release(inp)
                # Retried by Temporal (a 5xx, a 408, a 429 after its Retry-After, or a dropped
                # connection passes); any other 4xx is not: asking again gets the same answer.
                raise ApplicationError(
                    str(err), type="LlmError", non_retryable=not err.retryable,
                    next_retry_delay=timedelta(seconds=err.retry_after) if err.retry_after is not None else None,
                ) from err
        if why:
            proposal = replace(proposal, summary=f"{proposal.summary}; model {why}", model_reason=why)
        if self.metering is not None:
            # Each attempt that got an answer was paid for: its own record (the first settles the reservation).
            key = f"{inp.run.run_id}/{inp.label or inp.step.name}/llm/{activity.info().attempt}"
            metering = self.metering
            proposal = metering.priced(proposal)
            await asyncio.to_thread(lambda: metering.llm_call(
                key=key, run_id=inp.run.run_id, tenant=inp.run.tenant, step=inp.step.name,
                reservation=inp.reservation, proposal=proposal))
        return proposal

    async def _release(self, inp: FixInput) -> None:
        if self.metering is not None and inp.reservation:
            await asyncio.to_thread(self.metering.release, inp.reservation)

    def _choose(self, inp: FixInput) -> ModelChoice:
        """The model for this proposal (the run's SLA tier, the money left), on the run's timeline."""
        assert inp.model_tier is not None
        platform = self.metering.platform if self.metering is not None else BudgetSettings()
        left = remaining_usd(self.sessions, platform, inp.run.run_id, inp.run.tenant)
        reserved = next((m for m in self.catalogue if m.name == inp.model), None) if inp.model else None
        if reserved is not None:  # chosen when the call's budget was reserved, and priced at it
            choice = ModelChoice(reserved, inp.model_reason)
            left += budgets.held(self.sessions, inp.reservation).get(Dimension.COST, 0.0)  # the money left before it
        else:
            choice = choose_model(list(self.catalogue), Tier(inp.model_tier),
                                  prompt_tokens=prompt_tokens_bound(inp.log_tail),
                                  max_output_tokens=OUTPUT_TOKENS_BOUND, remaining_usd=left)
        reason = choice.reason.replace(f"${left:.4f} left", "no cost limit") if math.isinf(left) else choice.reason
        choice = replace(choice, reason=reason)
        model = choice.model
        event = SlaEvent(kind="model.chosen", key=f"{inp.label}/{inp.candidate}", at=datetime.now(UTC),
                         summary=f"{inp.step.name}: " + (f"model {reason}" if model else f"no model: {reason}"),
                         step=inp.step.name, data={
                             "model": model.name if model else None, "tier": model.tier.value if model else None,
                             "max_tier": inp.model_tier, "reason": reason, "candidate": inp.candidate,
                             "remaining_usd": None if math.isinf(left) else round(left, 6),
                             "worst_case_usd": round(choice.reserve_usd, 6)})
        with transaction(self.sessions) as session:
            sla_rows.record_sla_events(session, inp.run.run_id, inp.run.tenant, [event])
        return choice

    @activity.defn(name="verify_candidate")
    @timed_async("verify_candidate")
    async def verify_candidate(self, inp: VerifyInput | FirstShape) -> VerifyResult:
        """Best of N: apply one candidate patch in a checkout of its own (never the run's, never
        pushed) and re-run the failed step there; whether it passed and how big the patch is."""
        inp = current(VerifyInput, inp)
        lines = diff_size(inp.proposal.diff)
        checks = [*default_checks(), *inp.protected_checks]
        review = review_patch(inp.proposal.diff, FailureType(inp.signal_type), inp.write_scope, checks)
        if review.verdict is Verdict.REFUSED:
            return VerifyResult(inp.candidate, False, lines, reason="; ".join(review.problems))
        key = f"{inp.run.run_id}-candidate-{inp.candidate}"
        log_path = self.workspace.log_path(inp.run.run_id, inp.step_index, inp.step.name, f"candidate-{inp.candidate}")
        async with self.workspace.checkout(key, inp.run.repo_url, inp.run.branch, inp.commit) as (workdir, pgid):
            try:
                await self.workspace.git.apply(key, inp.proposal.diff)
            except GitError as err:
                await self.workspace.git.discard(key)
                return VerifyResult(inp.candidate, False, lines, reason=f"does not apply: {err}")
            try:
                code, timed_out, tail = await self.workspace.execute(
                    inp.step.command, inp.step.timeout_seconds, workdir, log_path, pgid,
                    self.workspace.step_env(inp.step.env, inp.run.run_id, inp.step.name, inp.commit, 0))
            finally:
                await self.workspace.git.discard(key)
        last = (tail.strip().splitlines() or [""])[-1][:200]
        passed = code == 0 and not timed_out
        return VerifyResult(inp.candidate, passed, lines, code,
                            "passed" if passed else ("timed out" if timed_out else f"exited {code}: {last}"))

    def _privacy(self, tenant: str, run_id: str) -> EffectivePrivacy:
        with transaction(self.sessions) as session:
            return governance.effective(session, self.privacy, tenant, run_id)

    def _refused(self, inp: FixInput, url: str, reason: str) -> None:
        """An outbound call refused: in the audit log (the run's timeline shows the proposal's summary)."""
        with transaction(self.sessions) as session:
            write_audit(session, "egress.refused", tenant=inp.run.tenant, actor="metabuilder",
                        target=f"llm:{host_of(url)}", run_id=inp.run.run_id,
                        data={"url": url, "reason": reason, "step": inp.step.name, "purpose": "llm fixer"})

    @activity.defn(name="apply_patch")
    @timed_async("apply_patch")
    async def apply_patch(self, inp: ApplyInput | FirstShape) -> ApplyResult:
        """Check a proposed patch against the sandbox rules and the protected checks; apply it as a
        commit on the run branch (also kept at ``refs/metabuilder/<run>/patch-<seq>``) only if it
        is allowed and not ``propose_only``, or if a person approved it. Recorded either way,
        idempotently by (run, seq): a proposal approved later updates its own record."""
        inp = current(ApplyInput, inp)
        checks = [*default_checks(), *inp.protected_checks]
        failure = FailureType(inp.signal_type)
        review = review_patch(inp.proposal.diff, failure, inp.write_scope, checks)
        verdict, problems, files = review.verdict, list(review.problems), list(review.files)
        commit, applied = inp.commit, False
        if verdict is not Verdict.REFUSED:
            async with self._checkout(inp.run, inp.commit) as (_, _pgid):
                ws = self.workspace.git
                changed: list[str] = []
                refusals: list[str] = []
                try:
                    changed = await ws.apply(inp.run.run_id, inp.proposal.diff)
                except GitError as err:
                    refusals.append(f"the patch does not apply: {str(err).rsplit(': ', 1)[-1]}")
                # What git actually changed is checked again: the diff's headers are not trusted alone.
                refusals += [bad for f in changed if (bad := path_problem(f, inp.write_scope))]
                if not changed and not refusals:
                    refusals.append("the patch changes nothing")
                late = [m for f in changed_path_findings(changed, failure, checks, inp.write_scope)
                        if (m := f"weakens a protected check: {f}") not in problems]
                problems += refusals + late
                files = list(dict.fromkeys([*files, *changed]))
                if refusals:
                    verdict = Verdict.REFUSED
                elif late:
                    verdict = Verdict.GATE
                if verdict is Verdict.GATE and inp.approved_by:
                    verdict = Verdict.ALLOWED
                if verdict is Verdict.ALLOWED and not inp.propose_only:
                    commit, _ = await ws.commit_changes(inp.run.run_id, self._message(inp))
                    await ws.push(inp.run.run_id, inp.run.repo_url, commit, [
                        f"refs/heads/{inp.run.branch}", f"refs/metabuilder/{inp.run.run_id}/patch-{inp.seq}"])
                    applied = True
                else:
                    await ws.discard(inp.run.run_id)
        p = inp.proposal
        outcome = "applied" if applied else "rejected" if verdict is Verdict.REFUSED else "proposed"
        reason = "; ".join(problems) or p.summary
        if applied and inp.approved_by:
            reason = f"approved by {inp.approved_by}" + (f"; {reason}" if problems else "")
        record = repository.RepairRecord(
            run_id=inp.run.run_id, seq=inp.seq, step_index=inp.step_index, step_name=inp.step_name,
            signal_type=inp.signal_type, fixer=p.fixer, outcome=outcome, reason=reason, diff=p.diff, files=files,
            commit_before=inp.commit, commit_after=commit if applied else None, model=p.model,
            tokens_in=p.tokens_in, tokens_out=p.tokens_out, cost_usd=p.cost_usd)
        await write(self.sessions, repository.record_repair_attempt, record)
        return ApplyResult(applied=applied, commit=commit, problems=problems, files=files, verdict=verdict)

    @staticmethod
    def _message(inp: ApplyInput) -> str:
        by = f", approved by {inp.approved_by}" if inp.approved_by else ""
        return f"metabuilder: {inp.proposal.fixer} patch for {inp.step_name} (run {inp.run.run_id}{by})"

    @activity.defn(name="rollback")
    @timed_async("rollback")
    async def rollback(self, inp: RollbackInput | FirstShape) -> RollbackResult:
        """Reset the run branch to the last good commit, then run the completed steps' rollback
        commands (given in reverse plan order) in a checkout of it. Stops at the first that fails."""
        inp = current(RollbackInput, inp)
        ran: list[str] = []
        async with self._checkout(inp.run, inp.last_good_commit) as (workdir, pgid):
            await self.workspace.git.push(inp.run.run_id, inp.run.repo_url, inp.last_good_commit,
                                             [f"refs/heads/{inp.run.branch}"])
            for index, step in enumerate(inp.commands):
                assert step.rollback_command is not None
                log_path = self.workspace.log_path(inp.run.run_id, 999, "rollback", f"{index:02d}-{step.name}")
                code, timed_out, tail = await self.workspace.execute(
                    step.rollback_command, step.timeout_seconds, workdir, log_path, pgid,
                    self.workspace.step_env(step.env, inp.run.run_id, step.name, inp.last_good_commit, 0))
                await self.workspace.git.discard(inp.run.run_id)
                if code != 0:
                    last = (tail.strip().splitlines() or [""])[-1][:200]
                    return RollbackResult(ok=False, ran=ran, error=(
                        f"rollback of {step.name!r} (`{step.rollback_command}`) "
                        + ("timed out" if timed_out else f"exited {code}") + f": {last}"))
                ran.append(step.name)
        return RollbackResult(ok=True, ran=ran)
