"""What the database says about steps is true: a step's command takes effect once across a worker
SIGKILLed just as it finished, a non-idempotent step is not re-run after an unknown end, a step
that cannot start fails at once, and no attempt of an ended run stays open (real processes)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError

from metabuilder.adapters.git import publish, snapshot
from metabuilder.domain.payloads import BuildRunInput, WorkspaceRef
from metabuilder.domain.plans import Plan, Step
from metabuilder.domain.policy import AutofixSettings, effective_settings
from metabuilder.domain.runs import RunStatus, new_run_id, run_branch
from metabuilder.service.runs import SubmitOptions, Submitted, autofix_config, start, submit
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import DevServer
from metabuilder.worker.settings import Settings
from metabuilder.workflows.build_run import BuildRunWorkflow
from tests.conftest import git
from tests.integration.conftest import start_worker, wait_for_file
from tests.workflows.test_build_run import record_history


def rows(sessions, run_id: str) -> list[tuple[str, int, str]]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        return [(r.name, r.attempt, r.status) for r in repository.run_steps(s, run_id)]


def result_file(settings: Settings, run_id: str, step: str, attempt: int) -> Path:
    return Path(settings.artifacts_dir) / run_id / f"000-{step}" / f"attempt-{attempt}.result"


async def submit_with_worker(settings: Settings, dev_server: DevServer, client: Client, user_repo: Path,
                             tmp_path: Path, procs: list[subprocess.Popen[bytes]], steps: str,
                             heartbeat_timeout: float = 3):  # type: ignore[no-untyped-def]
    """Start worker A, then a run whose steps may name it as $WORKER_PID (to freeze it at a chosen point)."""
    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-a.log"))
    steps = steps.replace("WORKER_A", str(procs[0].pid))
    return await submit(client, f"name: once\nsteps:\n{steps}", "plan.yaml", user_repo,
                        SubmitOptions.of(settings, heartbeat_timeout_seconds=heartbeat_timeout))


def kill_a_start_b(settings: Settings, dev_server: DevServer, tmp_path: Path,
                   procs: list[subprocess.Popen[bytes]]) -> None:
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-b.log"))


async def test_a_step_whose_worker_is_killed_as_its_command_finishes_takes_effect_once(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    side = tmp_path / "outside-the-workspace.txt"
    # The command stops its worker (SIGSTOP: it can report nothing more) and then ends; the worker
    # is SIGKILLed once the command's end is recorded, before it could have reported it.
    run = await submit_with_worker(settings, dev_server, client, user_repo, tmp_path, procs, (
        f"  - name: effect\n    command: echo once >> {side}; echo made > made.txt; kill -STOP WORKER_A\n"
        f"  - name: after\n    command: test -f made.txt\n"))
    await wait_for_file(result_file(settings, run.run_id, "effect", 1))
    kill_a_start_b(settings, dev_server, tmp_path, procs)

    async with asyncio.timeout(60):
        view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    assert side.read_text() == "once\n"
    assert rows(sessions, run.run_id) == [("effect", 1, "succeeded"), ("effect", 2, "adopted"),
                                          ("after", 1, "succeeded")]
    assert view.steps[0].attempt == 1
    assert git(Path(settings.shared_repo), "show", f"{view.steps[0].commit}:made.txt") == "made"
    with transaction(sessions) as s:
        first, second = repository.run_steps(s, run.run_id)[:2]
        assert (first.exit_code, first.commit_after) == (0, view.steps[0].commit)
        assert "adopted the recorded result of attempt 1" in second.log_tail


async def test_a_non_idempotent_step_is_not_run_again_after_its_worker_died_while_it_ran(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    side, release = tmp_path / "deployed.txt", tmp_path / "release"
    # The orphaned command goes on until the test releases it: were it to end first, its recorded
    # exit status would be adopted by the next attempt (exactly once), which is another test's case.
    run = await submit_with_worker(settings, dev_server, client, user_repo, tmp_path, procs, (
        f"  - name: deploy\n    command: echo deployed >> {side}; kill -STOP WORKER_A; "
        f"while [ ! -f {release} ]; do sleep 0.1; done\n    idempotent: false\n"))
    await wait_for_file(side)
    kill_a_start_b(settings, dev_server, tmp_path, procs)

    try:
        with pytest.raises(WorkflowFailureError):
            async with asyncio.timeout(90):
                await run.handle.result()
    finally:
        release.write_text("go")
    view = await run.handle.query(BuildRunWorkflow.status)
    assert view.status is RunStatus.FAILED
    assert "step 'deploy' was not run again: it is marked idempotent: false" in (view.error or "")
    assert side.read_text() == "deployed\n"
    assert rows(sessions, run.run_id) == [("deploy", 1, "lost"), ("deploy", 2, "error")]


async def wait_for_rows(sessions, run_id: str, expected: list[tuple[str, int, str]], timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while rows(sessions, run_id) != expected:
            await asyncio.sleep(0.1)


async def test_a_run_cancelled_while_its_worker_was_dead_ends_cancelled_with_no_attempt_running(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "started"
    # A heartbeat timeout well beyond the time worker B needs to start and take the workflow's
    # cancellation: the cancel is asked of an attempt whose worker is dead, which nobody reports
    # as cancelled, so the attempt ends by its heartbeat timeout (Temporal retries no activity
    # whose cancellation was asked). That timeout used to fail the run; it must end cancelled.
    run = await submit_with_worker(settings, dev_server, client, user_repo, tmp_path, procs,
                                   f"  - name: long\n    command: touch {marker}; sleep 90\n", heartbeat_timeout=30)
    await wait_for_file(marker)
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    await run.handle.cancel()
    procs.append(start_worker(settings, dev_server.address, tmp_path / "worker-b.log"))
    with pytest.raises(WorkflowFailureError):
        async with asyncio.timeout(90):
            await run.handle.result()
    assert (await run.handle.query(BuildRunWorkflow.status)).status is RunStatus.CANCELLED
    history = await run.handle.fetch_history()
    record_history("cancel_then_heartbeat_timeout", history.to_json())
    events = [e.WhichOneof("attributes") for e in history.events]
    asked, timed_out = (events.index(f"activity_task_{kind}_event_attributes")
                        for kind in ("cancel_requested", "timed_out"))
    assert asked < timed_out
    assert rows(sessions, run.run_id) == [("long", 1, "cancelled")]
    with transaction(sessions) as s:
        assert "closed when the run ended cancelled" in repository.run_steps(s, run.run_id)[0].log_tail


async def test_a_run_cancelled_once_a_dead_workers_step_is_retried_settles_both_attempts(
        client: Client, dev_server: DevServer, settings: Settings, sessions, user_repo: Path,
        tmp_path: Path, procs) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "started"
    run = await submit_with_worker(settings, dev_server, client, user_repo, tmp_path, procs,
                                   f"  - name: long\n    command: touch {marker}; sleep 60\n")
    await wait_for_file(marker)
    kill_a_start_b(settings, dev_server, tmp_path, procs)
    # B takes the retry after the heartbeat timeout, and first settles attempt 1.
    await wait_for_rows(sessions, run.run_id, [("long", 1, "lost"), ("long", 2, "running")])
    await run.handle.cancel()
    with pytest.raises(WorkflowFailureError):
        async with asyncio.timeout(60):
            await run.handle.result()
    assert (await run.handle.query(BuildRunWorkflow.status)).status is RunStatus.CANCELLED
    assert rows(sessions, run.run_id) == [("long", 1, "lost"), ("long", 2, "cancelled")]


async def start_unvalidated(client: Client, settings: Settings, repo: Path, step: Step) -> Submitted:
    """A run of ``step`` as a plan object: past what the plan parser would refuse up front, as a run
    submitted before that validation existed (or by another client) could be."""
    run_id = new_run_id()
    top, commit = await snapshot(repo)
    branch = run_branch(run_id)
    await publish(top, commit, settings.shared_repo, branch)
    autofix = effective_settings(AutofixSettings(enabled=True, max_total_attempts=10, max_per_step_attempts=5,
                                                  backoff_cap_seconds=60.0),
                                 None, None)
    return await start(client, BuildRunInput(
        run_id=run_id, plan=Plan(name="cannot-start", steps=[step]),
        workspace=WorkspaceRef(settings.shared_repo, branch, commit, source=str(top)),
        task_queue_prefix=settings.task_queue_prefix, autofix=autofix_config(autofix)))


@pytest.mark.parametrize(("step", "why"), [
    (Step(name="nul", command="echo a\0b"), "embedded null byte"),
    (Step(name="huge", command="true", env={"BIG": "x" * 200_000}), "Argument list too long"),
])
async def test_a_step_that_cannot_start_fails_at_once_and_is_not_a_lost_worker(
        step: Step, why: str, client: Client, settings: Settings, sessions, workers, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    run = await start_unvalidated(client, settings, user_repo, step)
    with pytest.raises(WorkflowFailureError):
        async with asyncio.timeout(30):
            await run.handle.result()
    view = await run.handle.query(BuildRunWorkflow.status)
    assert view.status is RunStatus.FAILED
    assert (view.error or "").startswith(f"step {step.name!r} cannot start its command: ")
    assert why in (view.error or "")
    with transaction(sessions) as s:
        (attempt,) = repository.run_steps(s, run.run_id)
        assert (attempt.attempt, attempt.status) == (1, "error")
        assert why in attempt.log_tail
