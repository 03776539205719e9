"""A tenant's patterns and corrections on both databases, and the step activity classifying with
the tenant's patterns."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from metabuilder.activities.steps import StepActivities
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.domain.knowledge import PatternEntry
from metabuilder.domain.taxonomy import FailureType
from metabuilder.migrations import upgrade
from metabuilder.store import knowledge
from metabuilder.store.db import make_engine, session_factory, transaction
from tests.conftest import fresh_pg_database

LOG = b"building\nERROR: frobnicator quota gate says no for build 42\n"


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path):
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'mb.db'}"
        else:
            request.getfixturevalue("pg_url")  # the server is up
            url = stack.enter_context(fresh_pg_database())
        upgrade(url)
        engine = make_engine(url, pooled=False)
        yield session_factory(engine)
        engine.dispose()


def test_patterns_are_per_tenant_and_used_in_that_tenants_runs(sessions, tmp_path: Path) -> None:
    entry = PatternEntry(id="team.frobnicator-gate", pattern="frobnicator quota gate says no",
                         failure_type=FailureType.POLICY, weight=0.95, description="our gate")
    with transaction(sessions) as session:
        knowledge.put_entries(session, "acme", [entry], by="admin")
        knowledge.put_entries(session, "acme", [entry], by="admin")  # same id: replaced, not doubled
    with transaction(sessions) as session:
        assert knowledge.tenant_entries(session, "acme") == [entry]
        assert knowledge.tenant_entries(session, "other") == []
        assert "team.frobnicator-gate" in {e.id for e in knowledge.tenant_knowledge_base(session, "acme").entries}

    log = tmp_path / "step.log"
    log.write_bytes(LOG)
    steps = StepActivities(Workspace(tmp_path, WorkspaceCache(tmp_path / "ws")), sessions)
    assert steps._classify(log, 1, "build", "acme").type is FailureType.POLICY
    assert steps._classify(log, 1, "build", "other").type is not FailureType.POLICY

    with transaction(sessions) as session:
        assert knowledge.delete_entry(session, "acme", "team.frobnicator-gate")
        assert not knowledge.delete_entry(session, "acme", "team.frobnicator-gate")


def test_corrections_are_kept_newest_first(sessions) -> None:
    with transaction(sessions) as session:
        for corrected in ("POLICY", "INFRA"):
            knowledge.add_correction(session, "acme", run_id="r1", step_name="build", predicted="UNKNOWN",
                                     corrected=corrected, log_window="x", exit_code=1, proposed=None, note="",
                                     by="op")
    with transaction(sessions) as session:
        rows = knowledge.list_corrections(session, "acme")
        assert [r.corrected for r in rows] == ["INFRA", "POLICY"]
        assert knowledge.get_correction(session, "other", rows[0].id) is None


def test_corrections_export_as_a_corpus_that_eval_reads(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url, pooled=False)
    with transaction(session_factory(engine)) as session:
        knowledge.add_correction(session, "acme", run_id="r1", step_name="licences", predicted="UNKNOWN",
                                 corrected="POLICY", log_window="licence-gate: clause we refuse", exit_code=3,
                                 proposed=None, note="", by="op")
    engine.dispose()
    env = {**os.environ, "DATABASE_URL": url, "META_BUILDER_HOME": str(tmp_path / "home")}
    out = tmp_path / "corpus"
    cli = [sys.executable, "-m", "metabuilder.worker.cli"]
    res = subprocess.run([*cli, "corrections", "export", str(out), "--tenant", "acme"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1 corrections" in res.stdout
    res = subprocess.run([*cli, "classify", "--eval", str(out), "--folds", "0"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "1 logs from 1 tools" in res.stdout
