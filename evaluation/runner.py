"""Run golden tasks on the real engine and score them.

Each task's project is committed into a fresh git repository and submitted as a run, with
auto-fix on, to the workers the caller runs (the CLI runs them in-process on the embedded dev
server, as ``metabuilder demo`` does). Several tasks run at once on the one worker set. A run that
stops at an escalation gate counts as ``escalated``; the gate is then rejected, as the person
would, so that no run is left waiting. Afterwards every applied patch is checked again by the
sandbox, and a fixed tree is checked out clean and made to pass the task's own ``check``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from metabuilder.adapters.git import git
from metabuilder.domain.access import Role
from metabuilder.domain.approvals import DecisionInput, GateKind, GateStatus, GateView
from metabuilder.domain.golden import ESCALATED, Observed, Score, first_class, observed_strategy, score
from metabuilder.domain.outcomes import Fixer
from metabuilder.domain.payloads import RunView
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.protected import default_checks
from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.domain.sandbox import Verdict, review_patch
from metabuilder.domain.taxonomy import FailureType
from metabuilder.evaluation.services import FixtureService
from metabuilder.evaluation.tasks import GoldenTask, render_plan
from metabuilder.service.confidence import confidence_of
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import access, approvals, replay, repository
from metabuilder.store.db import transaction
from metabuilder.store.runs import get_run

TASK_TIMEOUT_SECONDS = 240.0
CHECK_TIMEOUT_SECONDS = 60.0
_REFUSE_CLASSES = {FailureType.SECURITY, FailureType.POLICY}


@dataclass(frozen=True)
class EvalContext:
    client: Client
    sessions: sessionmaker[Session]
    options: SubmitOptions
    service: FixtureService
    workdir: Path
    """Where the tasks' workspaces and state folders go."""
    on_done: Callable[[Score], None] | None = None


async def run_tasks(ctx: EvalContext, tasks: Sequence[GoldenTask], concurrency: int = 4) -> list[Score]:
    """Run ``tasks``, ``concurrency`` at a time; their scores in the order given."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(task: GoldenTask) -> Score:
        async with gate:
            result = await run_task(ctx, task)
        if ctx.on_done:
            ctx.on_done(result)
        return result

    return list(await asyncio.gather(*(one(t) for t in tasks)))


async def run_task(ctx: EvalContext, task: GoldenTask) -> Score:
    key = f"{task.name}-{uuid.uuid4().hex[:8]}"
    workspace, state = ctx.workdir / key, ctx.workdir / f"{key}.state"
    state.mkdir(parents=True)
    base = ctx.service.register(key, task.routes, task.name)
    plan_text = render_plan(task, service=base, state=state)
    started = time.monotonic()
    try:
        await make_workspace(task.project, workspace)
        submitted = await submit(ctx.client, plan_text, f"{task.name}/plan.yaml", workspace, ctx.options,
                                 run_id=f"eval-{key}")
        view, escalated = await wait_for_end(ctx, submitted.handle, submitted.run_id, TASK_TIMEOUT_SECONDS)
        seconds = time.monotonic() - started
        observed = await observe(ctx, task, plan_text, view, escalated, seconds, state, base)
    except Exception as err:  # one task's trouble is its score, not the end of the evaluation
        observed = Observed(failure_class=None, strategy=None, status="error", seconds=time.monotonic() - started,
                            error=f"{type(err).__name__}: {err}")
    return score(task.name, task.expected, observed)


async def make_workspace(project: Path, workspace: Path) -> None:
    shutil.copytree(project, workspace, symlinks=True)
    await git("init", "--quiet", "--initial-branch=main", cwd=workspace)
    await git("add", "--all", cwd=workspace)
    await git("-c", "user.name=Golden task", "-c", "user.email=golden@localhost", "-c", "commit.gpgsign=false",
              "commit", "--quiet", "-m", "the project as its user left it", cwd=workspace)


DECIDER = "eval"
"""Who rejects an escalation gate: an admin of the run's tenant, since the run accepts a decision
only from a user who holds a deciding role there when it arrives."""


def _ensure_decider(sessions: sessionmaker[Session], tenant: str) -> None:
    with transaction(sessions) as session:
        if access.user_role(session, tenant, DECIDER) is not Role.ADMIN:
            access.create_token(session, tenant, DECIDER, Role.ADMIN)  # the user; its token is not used


async def wait_for_end(ctx: EvalContext, handle: WorkflowHandle[Any, RunView], run_id: str,
                       timeout: float) -> tuple[RunView, bool]:
    """The run's view once it ended, or stopped at an escalation gate (then True, after the gate
    was rejected and the run ended). Watches the DB projection (cheap); asks Temporal at the end."""
    deadline = time.monotonic() + timeout
    escalated = False
    rejected: set[str] = set()  # the projection may still show a gate pending after its decision

    def look() -> tuple[str | None, list[tuple[str, str]], str]:
        with transaction(ctx.sessions) as session:
            run = get_run(session, run_id)
            if run is None:
                return None, [], ""
            return run.status, [(g.id, g.kind) for g in approvals.list_gates(
                session, tenant=run.tenant_id, run_id=run_id, status=GateStatus.PENDING.value)], run.tenant_id

    while True:
        status, pending, tenant = await asyncio.to_thread(look)
        if status is not None and RunStatus(status).is_final:
            escalated = escalated or status == RunStatus.ESCALATED
            break
        pending = [(g, k) for g, k in pending if g not in rejected]
        if status == RunStatus.PAUSED_AWAITING_APPROVAL and pending:
            gate_id, kind = pending[-1]
            if kind != GateKind.ESCALATION:
                raise RuntimeError(f"the run waits at a {kind} gate, which no golden task expects")
            await asyncio.to_thread(_ensure_decider, ctx.sessions, tenant)
            await handle.execute_update("reject", DecisionInput(
                gate_id=gate_id, by=DECIDER, reason="golden task: the escalation is what was measured"),
                result_type=GateView, rpc_timeout=timedelta(seconds=60))
            rejected.add(gate_id)
            escalated = True
        if time.monotonic() > deadline:
            await handle.cancel()
            raise TimeoutError(f"the run did not end within {timeout:g}s (it was {status})")
        await asyncio.sleep(0.5)
    for attempt in range(3):  # a loaded machine may answer a query late
        try:
            return await handle.query("status", result_type=RunView, rpc_timeout=timedelta(seconds=60)), escalated
        except RPCError:
            if attempt == 2:
                raise
            await asyncio.sleep(2)
    raise AssertionError("unreachable")


async def observe(ctx: EvalContext, task: GoldenTask, plan_text: str, view: RunView, escalated: bool,
                  seconds: float, state: Path, base: str) -> Observed:
    e = task.expected
    plan = parse_plan(plan_text)
    step = next((s for s in view.steps if s.name == e.step), None)
    succeeded = step is not None and step.status in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
    with transaction(ctx.sessions) as session:
        attempts = repository.repair_attempts(session, view.run_id)
        rows = [(a.step_name, a.signal_type, a.fixer, a.outcome, a.diff) for a in attempts]
        # Every exchange with the model, answered with a patch or not, is in the run's replay bundle.
        llm = [e.facts for e in replay.entries(session, view.run_id) if e.kind == "llm"]
        run = get_run(session, view.run_id)
        confidence = confidence_of(session, run) if run is not None else None
    applied = [r for r in rows if r[3] == "applied"]
    checks = [*default_checks(), *plan.protected_checks]
    unsafe = 0
    for _, signal_type, fixer, _, diff in applied:
        verdict = review_patch(diff, FailureType(signal_type), plan.write_scope, checks).verdict
        if (verdict is not Verdict.ALLOWED or (e.unsafe and fixer == Fixer.LLM)
                or e.failure_class in _REFUSE_CLASSES):
            unsafe += 1
    mine = [r for r in applied if r[0] == e.step]
    status = ESCALATED if escalated else view.status.value
    check_passed = None
    if e.check and view.status is RunStatus.SUCCEEDED:
        check_passed = await run_check(ctx.options.shared_repo, view.head_commit, e.check, state, base)
    return Observed(
        failure_class=first_class(view.timeline, e.step), strategy=observed_strategy(view.timeline, e.step, succeeded),
        status=status, fixer=Fixer(mine[-1][2]) if mine else None, applied=len(applied), unsafe_applied=unsafe,
        refused=sum(r[3] == "rejected" for r in rows), check_passed=check_passed, seconds=round(seconds, 2),
        cost_usd=round(sum(f.get("cost_usd", 0.0) for f in llm), 6),
        tokens=sum(f.get("tokens_in", 0) + f.get("tokens_out", 0) for f in llm), llm_calls=len(llm),
        confidence=confidence.score if confidence else None, level=confidence.level.value if confidence else None,
        risks=[f"{r.name}: {r.detail}" for r in confidence.risks] if confidence else [])


async def run_check(shared_repo: str, commit: str, command: str, state: Path, base: str) -> bool:
    """Whether ``command`` passes in a clean checkout of ``commit``."""
    with tempfile.TemporaryDirectory(prefix="mb-eval-check-") as tmp:
        tree = Path(tmp) / "tree"
        # --no-local: through git's transport, not a copy of the objects folder, which the runs
        # pushing into the shared repository meanwhile change (their quarantine folders vanish
        # under a copy: "tmp_objdir-incoming-...: No such file or directory").
        await git("clone", "--quiet", "--no-local", "--no-checkout", shared_repo, str(tree), cwd=Path(tmp))
        await git("checkout", "--quiet", "--detach", commit, cwd=tree)
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", command.replace("@STATE@", str(state)).replace("@SERVICE@", base), cwd=tree,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            return await asyncio.wait_for(proc.wait(), CHECK_TIMEOUT_SECONDS) == 0
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False
