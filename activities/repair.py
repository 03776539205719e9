"""Activities of the repair ladder: propose a patch, apply it (after the sandbox check), roll back.

A proposal never changes the run branch: a fix command runs in the run's checkout and its
changes are captured as a diff and undone. Only ``apply_patch`` commits, and only a patch the
sandbox accepts, or a high-risk one a person approved at a gate; every other one is recorded
with its verdict, its reasons and the files it touches.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from metabuilder.activities.shapes import FirstShape, current
from metabuilder.activities.workspace import Workspace, write
from metabuilder.adapters.git import GitError
from metabuilder.adapters.llm import LlmError, LlmSettings, propose
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.payloads import (
    ApplyInput,
    ApplyResult,
    FixInput,
    PatchProposal,
    RollbackInput,
    RollbackResult,
    RunRef,
)
from metabuilder.domain.protected import default_checks
from metabuilder.domain.sandbox import Verdict, changed_path_findings, path_problem, review_patch
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import repository
from metabuilder.telemetry.metrics import timed_async

LLM_NOT_CONFIGURED = "no LLM endpoint is configured"


@dataclass
class RepairActivities:
    """The repair ladder's activities, given the worker's workspace (checkouts and command
    runner), the DB session factory and the LLM endpoint (optional)."""

    workspace: Workspace
    sessions: sessionmaker[Session]
    llm: LlmSettings | None = None

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
        if self.llm is None:
            return PatchProposal(fixer=Fixer.LLM, diff="", summary=LLM_NOT_CONFIGURED)
        async with self._checkout(inp.run, inp.commit) as (workdir, _):
            try:
                return await propose(self.llm, inp, workdir)
            except LlmError as err:
                # Retried by Temporal (a 5xx or a dropped connection passes); the message says what failed.
                raise ApplicationError(str(err), type="LlmError") from err

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
