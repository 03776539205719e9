"""Migrations and repository writes on both SQLite and the real PostgreSQL."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select

from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.migrations import current_revision, downgrade, upgrade
from metabuilder.store import repository
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.store.models import Base, BuildRun, BuildStep, ScaffoldPlan, Tenant
from tests.conftest import fresh_pg_database

HEAD_REVISION = "0019_v4_promotion_approvals"
PLAN = parse_plan("name: p\nsteps:\n  - {name: a, command: 'true'}\n")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind for each test: the session's PostgreSQL database holds what
    other tests wrote (counts and migrations here need none)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'mb.db'}"
        return
    with fresh_pg_database() as url:
        yield url


def test_migrations_up_down_up_and_match_the_models(db_url: str) -> None:
    upgrade(db_url)
    assert current_revision(db_url) == HEAD_REVISION
    engine = make_engine(db_url, pooled=False)
    with engine.connect() as conn:
        assert {"tenants", "scaffold_plans", "build_runs", "build_steps"} <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    downgrade(db_url, "base")
    with engine.connect() as conn:
        assert "build_runs" not in inspect(conn).get_table_names()
    upgrade(db_url)
    upgrade(db_url)  # idempotent
    assert current_revision(db_url) == HEAD_REVISION
    engine.dispose()


def _record(status: RunStatus, head: str = "b" * 40) -> RunRecord:
    return RunRecord(run_id="run-1", tenant="acme", status=status, plan=PLAN, plan_source="",
                     workflow_id="build-run-run-1", repo_url="/repo.git", branch="metabuilder/runs/run-1",
                     base_commit="a" * 40, head_commit=head)


def test_writes_are_idempotent_upserts(db_url: str) -> None:
    upgrade(db_url)
    sessions = session_factory(make_engine(db_url))
    attempt = repository.StepAttempt(run_id="run-1", step_index=0, attempt=1, name="a", queue="cpu",
                                     command="true", commit_before="a" * 40, worker="w1")
    for _ in range(3):  # a retried activity writes the same rows again
        with transaction(sessions) as s:
            repository.record_run(s, _record(RunStatus.RUNNING))
            repository.step_started(s, attempt)
    with transaction(sessions) as s:
        repository.step_finished(s, attempt, status="succeeded", exit_code=0, duration_seconds=0.5,
                                 commit_after="c" * 40, log_tail="ok", log_path="/x.log")
        repository.record_run(s, _record(RunStatus.SUCCEEDED, head="c" * 40))
    with transaction(sessions) as s:
        counts = [s.scalar(select(func.count()).select_from(m)) for m in (Tenant, ScaffoldPlan, BuildRun, BuildStep)]
        assert counts == [1, 1, 1, 1]
        run = repository.get_run(s, "run-1")
        assert run is not None and (run.status, run.head_commit) == ("succeeded", "c" * 40)
        assert run.finished_at is not None
        (step,) = repository.run_steps(s, "run-1")
        assert (step.status, step.exit_code, step.commit_after, step.log_tail) == ("succeeded", 0, "c" * 40, "ok")
        assert [r.id for r in repository.list_runs(s, tenant="acme", status="succeeded")] == ["run-1"]
        assert repository.list_runs(s, tenant="other") == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_processes_that_start_together_on_a_new_database_all_migrate_it(backend: str, tmp_path: Path) -> None:
    """A worker and a CLI command started at once on a fresh database (seen in the CLI tests: one
    of them died on 'duplicate column' before migrations took a lock)."""
    with contextlib.ExitStack() as stack:
        db_url = (f"sqlite:///{tmp_path / 'new.db'}" if backend == "sqlite"
                  else stack.enter_context(fresh_pg_database()))
        _migrate_at_once(db_url)


def _migrate_at_once(db_url: str) -> None:
    script = f"from migrations import upgrade; upgrade({db_url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else "") for p in procs]
    assert [code for code, _ in results] == [0] * len(procs), "\n".join(out for _, out in results)
    assert current_revision(db_url) == HEAD_REVISION
