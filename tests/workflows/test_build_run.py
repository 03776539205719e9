"""BuildRunWorkflow on the real Temporal dev server, with real git and real subprocesses."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from metabuilder.domain.payloads import RUN_FAILED, RunView
from metabuilder.domain.runs import RunStatus, StepStatus, workflow_id
from metabuilder.service.runs import RunExistsError, SubmitOptions, Submitted, submit
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.worker.devserver import temporal_cli
from metabuilder.worker.settings import Settings
from metabuilder.workflows import search_attributes as sa
from metabuilder.workflows.build_run import BuildRunWorkflow
from tests.conftest import git

HISTORIES = Path(__file__).parent.parent / "histories"


def opts(settings: Settings) -> SubmitOptions:
    return SubmitOptions.of(settings)


async def start(client: Client, settings: Settings, repo: Path, steps: str, **kw: str) -> Submitted:
    return await submit(client, f"name: test-plan\nsteps:\n{steps}", "plan.yaml", repo, opts(settings), **kw)


async def wait_for_step(client: Client, run_id: str, index: int, status: StepStatus, timeout: float = 30) -> None:
    handle = client.get_workflow_handle(workflow_id(run_id))
    async with asyncio.timeout(timeout):
        while True:
            view = await handle.query(BuildRunWorkflow.status)
            if view.steps[index].status is status:
                return
            await asyncio.sleep(0.1)


HISTORY_SHAPE = "v2"
"""The payload shape histories are recorded with now, in their file names (``NAME.v2.json``);
``NAME.json`` are of the first shape. A change of shape bumps it, so that the histories of every
older shape stay and keep replaying (v2: one ``RunRef`` in activity inputs, the slim ``RepairInput``)."""


def record_history(name: str, history_json: str) -> None:
    """With METABUILDER_RECORD_HISTORIES=1, keep this history for the replay tests."""
    if os.environ.get("METABUILDER_RECORD_HISTORIES") == "1":
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.{HISTORY_SHAPE}.json").write_text(history_json)


MULTI_STEP = """\
  - name: generate
    command: mkdir -p gen && echo 'VALUE = 42' > gen/value.py && echo generated
    queue: io
  - name: check
    command: test -f gen/value.py && grep -q 42 gen/value.py && echo "found $(cat gen/value.py)"
    queue: cpu
  - name: append
    command: echo more >> README.txt
    queue: cpu
"""


async def test_multi_step_run_commits_on_run_branch_not_users(
        client: Client, settings: Settings, sessions, workers, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    (user_repo / "uncommitted.txt").write_text("work in progress\n")  # built, but not touched
    user_head = git(user_repo, "rev-parse", "HEAD")
    user_status = git(user_repo, "status", "--porcelain")

    run = await start(client, settings, user_repo, MULTI_STEP)
    view = await run.handle.result()

    assert view.status is RunStatus.SUCCEEDED
    assert [s.status for s in view.steps] == [StepStatus.SUCCEEDED] * 3
    shared = Path(settings.shared_repo)
    assert git(shared, "rev-parse", f"refs/heads/{view.branch}") == view.head_commit
    # Two file-changing steps, two commits on top of the snapshot of the user's tree.
    log = git(shared, "log", "--format=%s", f"{run.workspace.base_commit}..{view.head_commit}").splitlines()
    assert log == [f"metabuilder: append (run {run.run_id})", f"metabuilder: generate (run {run.run_id})"]
    assert git(shared, "show", f"{view.head_commit}:gen/value.py") == "VALUE = 42"
    assert git(shared, "show", f"{view.head_commit}:uncommitted.txt") == "work in progress"
    assert view.steps[1].commit == view.steps[0].commit  # a step that changes nothing commits nothing
    # The user's branch, index and working tree are as they were.
    assert git(user_repo, "rev-parse", "HEAD") == user_head
    assert git(user_repo, "status", "--porcelain") == user_status
    assert not (user_repo / "gen").exists()
    assert git(user_repo, "branch", "--list") == "* main"

    with transaction(sessions) as s:
        row = repository.get_run(s, run.run_id)
        assert row is not None and row.status == "succeeded" and row.head_commit == view.head_commit
        steps = repository.run_steps(s, run.run_id)
        assert [(x.name, x.status, x.exit_code, x.attempt) for x in steps] == [
            ("generate", "succeeded", 0, 1), ("check", "succeeded", 0, 1), ("append", "succeeded", 0, 1)]
        assert "found VALUE = 42" in steps[1].log_tail
        assert Path(steps[1].log_path).read_text().strip() == "found VALUE = 42"

    desc = await run.handle.describe()
    assert desc.typed_search_attributes.get(sa.RUN_STATUS) == "succeeded"
    assert desc.typed_search_attributes.get(sa.TENANT) == "default"
    record_history("multi_step_success", (await run.handle.fetch_history()).to_json())


async def test_failing_step_fails_run_with_exit_code_and_log(
        client: Client, settings: Settings, sessions, workers, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    steps = """\
  - name: ok
    command: echo fine
  - name: broken
    command: echo 'about to fail' && echo 'E   assert 1 == 2' >&2 && exit 3
  - name: never
    command: echo should not run
"""
    run = await start(client, settings, user_repo, steps)
    with pytest.raises(WorkflowFailureError) as info:
        await run.handle.result()
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == RUN_FAILED
    assert cause.message == "step 'broken' exited with 3 (TEST_ASSERT)"

    view = await run.handle.query(BuildRunWorkflow.status)
    assert view.status is RunStatus.FAILED and view.failed_step == "broken"
    assert [s.status for s in view.steps] == [StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.PENDING]
    assert view.steps[1].exit_code == 3
    assert "about to fail" in view.steps[1].log_tail and "E   assert 1 == 2" in view.steps[1].log_tail

    with transaction(sessions) as s:
        row = repository.get_run(s, run.run_id)
        assert row is not None and (row.status, row.failed_step) == ("failed", "broken")
        assert row.error == "step 'broken' exited with 3 (TEST_ASSERT)"
        assert [(x.name, x.status, x.exit_code) for x in repository.run_steps(s, run.run_id)] == [
            ("ok", "succeeded", 0), ("broken", "failed", 3)]
    desc = await run.handle.describe()
    assert desc.status == WorkflowExecutionStatus.FAILED
    assert desc.typed_search_attributes.get(sa.RUN_STATUS) == "failed"
    record_history("failing_step", (await run.handle.fetch_history()).to_json())


async def test_step_timeout_kills_the_command(
        client: Client, settings: Settings, workers, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    run = await start(client, settings, user_repo, "  - name: slow\n    command: sleep 30\n    timeout: 1s\n")
    with pytest.raises(WorkflowFailureError):
        await run.handle.result()
    view = await run.handle.query(BuildRunWorkflow.status)
    assert view.steps[0].exit_code == 124
    assert "timed out after 1s" in view.steps[0].log_tail
    assert view.error == "step 'slow' timed out after 1s (TRANSIENT)"


@pytest.mark.parametrize("how", ["client", "temporal-cli"])
async def test_cancel_kills_the_step_and_ends_cancelled(
        how: str, client: Client, settings: Settings, sessions, workers, user_repo: Path,
        dev_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "still-running"
    steps = f"  - name: long\n    command: sleep 20 && touch {marker}\n  - name: after\n    command: echo no\n"
    run = await start(client, settings, user_repo, steps)
    await wait_for_step(client, run.run_id, 0, StepStatus.RUNNING)
    await asyncio.sleep(0.5)
    if how == "client":
        await run.handle.cancel()
    else:
        subprocess.run([temporal_cli(), "workflow", "cancel", "--address", dev_server.address,
                        "--workflow-id", workflow_id(run.run_id)], check=True, capture_output=True)
    async with asyncio.timeout(20):
        while (await run.handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await asyncio.sleep(0.1)
    assert (await run.handle.describe()).status == WorkflowExecutionStatus.CANCELED
    view = await run.handle.query(BuildRunWorkflow.status)
    assert view.status is RunStatus.CANCELLED
    assert [s.status for s in view.steps] == [StepStatus.CANCELLED, StepStatus.PENDING]
    with transaction(sessions) as s:
        row = repository.get_run(s, run.run_id)
        assert row is not None and row.status == "cancelled"
        assert [x.status for x in repository.run_steps(s, run.run_id)] == ["cancelled"]
    assert not marker.exists()  # the command's process group was killed
    if how == "client":
        record_history("cancelled", (await run.handle.fetch_history()).to_json())


async def test_run_ids_are_never_reused(
        client: Client, settings: Settings, workers, user_repo: Path) -> None:  # type: ignore[no-untyped-def]
    first = await start(client, settings, user_repo, "  - name: a\n    command: 'true'\n", run_id="fixed-id-1")
    await first.handle.result()
    with pytest.raises(RunExistsError, match="run fixed-id-1 exists already"):
        await start(client, settings, user_repo, "  - name: a\n    command: 'true'\n", run_id="fixed-id-1")


async def test_step_environment_has_run_facts_and_no_worker_secrets(
        client: Client, settings: Settings, workers, user_repo: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("DEPLOY_TOKEN", "s3cret")
    steps = ("  - name: env\n    command: env | sort\n    env: {GREETING: hi}\n")
    run = await start(client, settings, user_repo, steps)
    view: RunView = await run.handle.result()
    tail = view.steps[0].log_tail
    assert "GREETING=hi" in tail and f"METABUILDER_RUN_ID={run.run_id}" in tail
    assert "s3cret" not in tail and "DATABASE_URL" not in tail

