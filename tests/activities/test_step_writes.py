"""The step path's database writes (issue 14): a step that passes commits two transactions, its
``running`` row with its lease, and its final row with the end of its log, the lease's release
and its replay bundle entry; the parts written together are all there (real SQLite, real git)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from metabuilder.activities.breakers import Breakers
from metabuilder.activities.replay import RecordingStepActivities
from metabuilder.activities.step_watch import LogSettings, StepWatcher
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.domain.runs import AttemptStatus
from metabuilder.migrations import upgrade
from metabuilder.store import hosts, repository
from metabuilder.store import replay as bundle
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.store.hosts import AttemptKey
from tests.activities.test_steps import step_input


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def steps(engine: Engine, tmp_path: Path) -> RecordingStepActivities:
    sessions: sessionmaker[Session] = session_factory(engine)
    workspace = Workspace(tmp_path / "artifacts", WorkspaceCache(tmp_path / "cache"),
                          watcher=StepWatcher(sessions, "worker-1", LogSettings()))
    return RecordingStepActivities(workspace, sessions, breakers=Breakers(sessions))


def commits(engine: Engine) -> list[int]:
    """Counts the transactions committed on ``engine`` from now on."""
    counted = [0]

    def on_commit(_conn: Any) -> None:
        counted[0] += 1

    event.listen(engine, "commit", on_commit)
    return counted


async def test_a_passing_step_commits_two_transactions_with_everything_in_them(
        steps: RecordingStepActivities, engine: Engine, user_repo: Path, tmp_path: Path) -> None:
    inp = await step_input(steps, user_repo, tmp_path, "echo hello from the step")
    await ActivityEnvironment().run(steps.run_step, inp)  # the first: a checkout, the breakers' first look
    second = type(inp)(run=inp.run, step_index=1, step=inp.step, commit=inp.commit)
    counted = commits(engine)
    result = await ActivityEnvironment().run(steps.run_step, second)
    assert result.exit_code == 0
    assert counted[0] == 2
    with transaction(steps.sessions) as s:
        assert [(r.step_index, r.status) for r in repository.run_steps(s, "r1")] == \
            [(0, AttemptStatus.SUCCEEDED), (1, AttemptStatus.SUCCEEDED)]
        assert hosts.leases(s, run_id="r1") == []
        chunks = hosts.log_chunks(s, AttemptKey("r1", 1, 1))
        assert b"".join(zlib.decompress(c.data) for c in chunks) == b"hello from the step\n"
        assert [c.final for c in chunks] == [False, True]
        entries = {e.key: e for e in bundle.entries(s, "r1")}
        assert set(entries) == {"step:0:1", "step:1:1"}
        assert entries["step:1:1"].facts["exit_code"] == 0
        assert bundle.blobs(s, [entries["step:1:1"].blobs["log"]]).popitem()[1] == b"hello from the step\n"
