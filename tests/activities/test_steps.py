"""The step activity on its own (real git, real subprocesses, a real SQLite DB): how it settles
the attempts before it, and that the worker's own errors are not recorded as lost workers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from metabuilder.activities.steps import StepActivities
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import GitError, WorkspaceCache, publish, snapshot
from metabuilder.domain.payloads import RunRecord, RunRef, StepInput
from metabuilder.domain.plans import Step, parse_plan
from metabuilder.domain.runs import AttemptStatus, RunStatus
from metabuilder.migrations import upgrade
from metabuilder.store import repository
from metabuilder.store.db import make_engine, session_factory, transaction
from tests.conftest import git

PLAN = "name: p\nsteps:\n  - {name: s, command: 'true'}\n"


@pytest.fixture
def steps(tmp_path: Path) -> Iterator[StepActivities]:
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions: sessionmaker[Session] = session_factory(engine)
    yield StepActivities(Workspace(tmp_path / "artifacts", WorkspaceCache(tmp_path / "cache")), sessions)
    engine.dispose()


async def step_input(steps: StepActivities, user_repo: Path, tmp_path: Path, command: str) -> StepInput:
    shared = str(tmp_path / "shared.git")
    top, commit = await snapshot(user_repo)
    await publish(top, commit, shared, "metabuilder/runs/r1")
    with transaction(steps.sessions) as s:
        repository.record_run(s, RunRecord(
            run_id="r1", tenant="t", status=RunStatus.RUNNING, plan=parse_plan(PLAN), plan_source="",
            workflow_id="build-run-r1", repo_url=shared, branch="metabuilder/runs/r1",
            base_commit=commit, head_commit=commit))
    return StepInput(run=RunRef(run_id="r1", tenant="t", repo_url=shared, branch="metabuilder/runs/r1"), step_index=0,
                     step=Step(name="s", command=command), commit=commit)


def rows(steps: StepActivities) -> list[tuple[int, str]]:
    with transaction(steps.sessions) as s:
        return [(r.attempt, r.status) for r in repository.run_steps(s, "r1")]


def attempt(n: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = replace(env.info, attempt=n)
    return env


async def test_a_worker_error_is_recorded_as_such_and_not_later_called_lost(
        steps: StepActivities, user_repo: Path, tmp_path: Path) -> None:
    inp = await step_input(steps, user_repo, tmp_path, "echo ok")
    with pytest.raises(GitError, match="is not in"):
        await attempt(1).run(steps.run_step, replace(inp, commit="0" * 40))
    assert rows(steps) == [(1, "error")]
    result = await attempt(2).run(steps.run_step, inp)
    assert result.exit_code == 0
    assert rows(steps) == [(1, "error"), (2, "succeeded")]


async def test_a_retry_adopts_the_recorded_result_of_an_attempt_whose_worker_died(
        steps: StepActivities, user_repo: Path, tmp_path: Path) -> None:
    side = tmp_path / "effects.txt"
    inp = await step_input(steps, user_repo, tmp_path, f"echo once >> {side}; echo made > made.txt")
    first = await attempt(1).run(steps.run_step, inp)
    # As if its worker had died before reporting: the row back to running, the report lost.
    with transaction(steps.sessions) as s:
        repository.close_attempt(s, "r1", 0, 1, AttemptStatus.RUNNING, reason="",
                                 open_statuses=(AttemptStatus.SUCCEEDED,))
    second = await attempt(2).run(steps.run_step, inp)
    assert side.read_text() == "once\n"
    assert (second.commit, second.attempt, second.changed_files) == (first.commit, 1, ["made.txt"])
    assert rows(steps) == [(1, "succeeded"), (2, "adopted")]
    assert git(Path(inp.run.repo_url), "rev-parse", "metabuilder/runs/r1") == first.commit


async def test_an_attempt_lost_while_its_command_ran_is_lost_and_the_step_runs_again(
        steps: StepActivities, user_repo: Path, tmp_path: Path) -> None:
    inp = await step_input(steps, user_repo, tmp_path, "echo again")
    with transaction(steps.sessions) as s:  # attempt 1 started its command and left no result
        repository.step_started(s, repository.StepAttempt(
            run_id="r1", step_index=0, attempt=1, name="s", queue="cpu", command="echo again",
            commit_before=inp.commit, worker="gone:1"))
    log = steps.workspace.log_path("r1", 0, "s", "attempt-1")
    log.parent.mkdir(parents=True)
    log.write_text("half way\n")
    assert (await attempt(2).run(steps.run_step, inp)).exit_code == 0
    assert rows(steps) == [(1, "lost"), (2, "succeeded")]
    with pytest.raises(Exception, match="was not run again: it is marked idempotent: false"):
        with transaction(steps.sessions) as s:
            repository.step_started(s, repository.StepAttempt(
                run_id="r1", step_index=1, attempt=1, name="d", queue="cpu", command="echo deploy",
                commit_before=inp.commit, worker="gone:1"))
        log = steps.workspace.log_path("r1", 1, "d", "attempt-1")
        log.parent.mkdir(parents=True)
        log.write_text("deploying\n")
        await attempt(2).run(steps.run_step, replace(inp, step_index=1, step=Step(name="d", command="echo deploy",
                                                                                  idempotent=False)))
    assert rows(steps)[2:] == [(1, "lost"), (2, "error")]


async def test_an_attempt_that_left_no_row_is_settled_by_its_log(
        steps: StepActivities, user_repo: Path, tmp_path: Path) -> None:
    # Its worker died before its "running" row was written: a non-idempotent step is still not
    # run again once its log shows the command had started, and one with no log is run.
    inp = await step_input(steps, user_repo, tmp_path, "echo deploy")
    log = steps.workspace.log_path("r1", 0, "s", "attempt-1")
    log.parent.mkdir(parents=True)
    log.write_text("deploying\n")
    with pytest.raises(Exception, match="was not run again: it is marked idempotent: false"):
        await attempt(2).run(steps.run_step, replace(inp, step=replace(inp.step, idempotent=False)))
    assert rows(steps) == [(1, "lost"), (2, "error")]
    assert (await attempt(2).run(steps.run_step, replace(inp, step_index=1))).exit_code == 0
    with transaction(steps.sessions) as s:
        assert [(r.step_index, r.attempt, r.status) for r in repository.run_steps(s, "r1")][2:] == [
            (1, 1, "lost"), (1, 2, "succeeded")]
        assert "before the command started" in repository.run_steps(s, "r1")[2].log_tail


@pytest.mark.parametrize(("text", "expected"), [
    ("exit=0\ncommit=abc\ntimes=1.5 2.5 3.5\nend\n", (0, "abc", (1.5, 2.5, 3.5))),
    ("exit=0\ncommit=abc\ntimes=1,5 2,5 3,5\nend\n", (0, "abc", (1.5, 2.5, 3.5))),
    ("exit=0\ncommit=abc\ntimes=1.5 2.5 3.5\n", None),  # cut short: no end line
    ("exit=0\ncommit=ab", None),
    ("exit=3\ncommit=\nend\n", (3, "", ())),
    ("exit=0\ncommit=abc\n", None),  # no end line: an earlier wrapper's, counted as no record
    ("", None),
])
def test_a_record_is_read_only_when_whole(tmp_path: Path, text: str, expected: tuple[object, ...] | None) -> None:
    from metabuilder.activities.completion import read_recorded

    path = tmp_path / "attempt-1.result"
    path.write_text(text)
    r = read_recorded(path)
    assert (None if r is None else (r.exit_code, r.commit, r.times)) == expected
