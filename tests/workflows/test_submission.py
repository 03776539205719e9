"""A submission that Temporal refuses leaves no branch behind, and never moves another run's."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from metabuilder.domain.runs import workflow_id
from metabuilder.service.runs import RunExistsError, SubmitOptions, submit
from metabuilder.worker.settings import Settings
from tests.conftest import git


def run_branches(settings: Settings) -> list[str]:
    shared = Path(settings.shared_repo)
    if not (shared / "HEAD").exists():
        return []
    return git(shared, "for-each-ref", "--format=%(refname:short)", "refs/heads/metabuilder/runs").splitlines()


def opts(settings: Settings) -> SubmitOptions:
    return SubmitOptions.of(settings, heartbeat_timeout_seconds=10)


PLAN = "name: p\nsteps:\n  - {name: a, command: 'true'}\n"


async def test_a_run_id_taken_in_temporal_leaves_no_branch(client: Client, settings: Settings, user_repo: Path) -> None:
    # A workflow under the run's id that has no branch (started by other means): the push comes
    # before the start, so the refusal must take the branch back.
    await client.start_workflow("SomeOtherWorkflow", id=workflow_id("taken-1"),
                                task_queue=f"{settings.task_queue_prefix}-nowhere")
    with pytest.raises(RunExistsError):
        await submit(client, PLAN, "plan.yaml", user_repo, opts(settings), run_id="taken-1")
    assert run_branches(settings) == []


async def test_a_reused_run_id_leaves_the_first_runs_branch_as_it_was(
        client: Client, settings: Settings, user_repo: Path) -> None:
    first = await submit(client, PLAN, "plan.yaml", user_repo, opts(settings), run_id="reused-1")
    (user_repo / "app.py").write_text("print('changed since')\n")
    with pytest.raises(RunExistsError):
        await submit(client, PLAN, "plan.yaml", user_repo, opts(settings), run_id="reused-1")
    assert run_branches(settings) == ["metabuilder/runs/reused-1"]
    assert git(Path(settings.shared_repo), "rev-parse", "metabuilder/runs/reused-1") == first.workspace.base_commit
    await first.handle.terminate("no workers in this test")


async def test_a_payload_temporal_refuses_leaves_no_branch(client: Client, settings: Settings, user_repo: Path) -> None:
    big = "name: p\ndescription: " + "x" * 1_500_000 + "\nsteps:\n  - {name: a, command: 'true'}\n"
    with pytest.raises((RPCError, ValueError)):  # Temporal's blob limit, or a check before it
        await submit(client, big, "plan.yaml", user_repo, opts(settings), run_id="too-big-1")
    assert run_branches(settings) == []
