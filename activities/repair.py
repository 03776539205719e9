"""Activities of the repair ladder: propose a patch, apply it (after the sandbox check), roll back.

A proposal never changes the run branch: a fix command runs in the run's checkout and its
changes are captured as a diff and undone. Only ``apply_patch`` commits, and only a patch the
sandbox accepts; a rejected one is recorded with its reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.git import GitError
from activities.llm import LlmError, LlmSettings, propose
from activities.steps import StepActivities
from domain.payloads import ApplyInput, ApplyResult, FixInput, PatchProposal, RollbackInput, RollbackResult
from domain.sandbox import check_patch, path_problem
from store import repository
from telemetry.metrics import timed_async

LLM_NOT_CONFIGURED = "no LLM endpoint is configured"


@dataclass
class RepairActivities:
    steps: StepActivities
    llm: LlmSettings | None = None

    @activity.defn(name="propose_fix")
    @timed_async("propose_fix")
    async def propose_fix(self, inp: FixInput) -> PatchProposal:
        """Run a deterministic fixer (the step's fix command, ``alembic merge heads``) in the run's
        checkout at ``inp.commit`` and return what it changed as a diff; the checkout is left clean."""
        assert inp.command is not None
        log_path = self.steps.log_path(inp.run_id, inp.step_index, inp.step.name, inp.label or "fix")
        async with self.steps.checkout(inp.run_id, inp.repo_url, inp.branch, inp.commit) as (workdir, pgid):
            code, timed_out, tail = await self.steps.execute(
                inp.command, inp.step.timeout_seconds, workdir, log_path, pgid,
                self.steps.step_env(inp.step.env, inp.run_id, inp.step.name, inp.commit, 0))
            diff, files = await self.steps.workspaces.capture_diff(inp.run_id)
        summary = f"`{inp.command}` exited {code}" + (" (timed out)" if timed_out else "")
        if code != 0 and not diff:
            summary += ": " + (tail.strip().splitlines() or [""])[-1][:200]
        return PatchProposal(fixer=inp.fixer, diff=diff, summary=summary + f"; {len(files)} file(s) changed")

    @activity.defn(name="propose_llm_patch")
    @timed_async("propose_llm_patch")
    async def propose_llm_patch(self, inp: FixInput) -> PatchProposal:
        """Ask the configured LLM for a patch (an empty diff when none is configured)."""
        if self.llm is None:
            return PatchProposal(fixer="llm", diff="", summary=LLM_NOT_CONFIGURED)
        async with self.steps.checkout(inp.run_id, inp.repo_url, inp.branch, inp.commit) as (workdir, _):
            try:
                return await propose(self.llm, inp, workdir)
            except LlmError as err:
                # Retried by Temporal (a 5xx or a dropped connection passes); the message says what failed.
                raise ApplicationError(str(err), type="LlmError") from err

    @activity.defn(name="apply_patch")
    @timed_async("apply_patch")
    async def apply_patch(self, inp: ApplyInput) -> ApplyResult:
        """Check a proposed patch against the sandbox rules; if it passes, apply it as a commit
        on the run branch (also kept at ``refs/metabuilder/<run>/patch-<seq>``). Recorded either way."""
        problems = check_patch(inp.proposal.diff, inp.write_scope)
        commit, files = inp.commit, []
        if not problems:
            async with self.steps.checkout(inp.run_id, inp.repo_url, inp.branch, inp.commit) as (_, _pgid):
                ws = self.steps.workspaces
                try:
                    files = await ws.apply(inp.run_id, inp.proposal.diff)
                except GitError as err:
                    problems = [f"the patch does not apply: {str(err).rsplit(': ', 1)[-1]}"]
                # What git actually changed is checked again: the diff's headers are not trusted alone.
                problems += [p for f in files if (p := path_problem(f, inp.write_scope))]
                if problems or not files:
                    problems = problems or ["the patch changes nothing"]
                    await ws.discard(inp.run_id)
                else:
                    commit, _ = await ws.commit_changes(
                        inp.run_id, f"metabuilder: {inp.proposal.fixer} patch for {inp.step_name} (run {inp.run_id})")
                    await ws.push(inp.run_id, inp.repo_url, commit, [
                        f"refs/heads/{inp.branch}", f"refs/metabuilder/{inp.run_id}/patch-{inp.seq}"])
        p = inp.proposal
        record = repository.RepairRecord(
            run_id=inp.run_id, seq=inp.seq, step_index=inp.step_index, step_name=inp.step_name,
            signal_type=inp.signal_type, fixer=p.fixer, outcome="rejected" if problems else "applied",
            reason="; ".join(problems) or p.summary, diff=p.diff, files=files, commit_before=inp.commit,
            commit_after=None if problems else commit, model=p.model, tokens_in=p.tokens_in,
            tokens_out=p.tokens_out, cost_usd=p.cost_usd)
        await self.steps.db(repository.record_repair_attempt, record)
        return ApplyResult(applied=not problems, commit=commit, problems=problems, files=files)

    @activity.defn(name="rollback")
    @timed_async("rollback")
    async def rollback(self, inp: RollbackInput) -> RollbackResult:
        """Reset the run branch to the last good commit, then run the completed steps' rollback
        commands (given in reverse plan order) in a checkout of it. Stops at the first that fails."""
        ran: list[str] = []
        async with self.steps.checkout(inp.run_id, inp.repo_url, inp.branch, inp.last_good_commit) as (workdir, pgid):
            await self.steps.workspaces.push(inp.run_id, inp.repo_url, inp.last_good_commit,
                                             [f"refs/heads/{inp.branch}"])
            for index, step in enumerate(inp.commands):
                assert step.rollback_command is not None
                log_path = self.steps.log_path(inp.run_id, 999, "rollback", f"{index:02d}-{step.name}")
                code, timed_out, tail = await self.steps.execute(
                    step.rollback_command, step.timeout_seconds, workdir, log_path, pgid,
                    self.steps.step_env(step.env, inp.run_id, step.name, inp.last_good_commit, 0))
                await self.steps.workspaces.discard(inp.run_id)
                if code != 0:
                    last = (tail.strip().splitlines() or [""])[-1][:200]
                    return RollbackResult(ok=False, ran=ran, error=(
                        f"rollback of {step.name!r} (`{step.rollback_command}`) "
                        + ("timed out" if timed_out else f"exited {code}") + f": {last}"))
                ran.append(step.name)
        return RollbackResult(ok=True, ran=ran)
