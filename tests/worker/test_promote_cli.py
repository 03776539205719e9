"""`metabuilder promote RUN` without a token: straight from the database and the shared repository."""

from __future__ import annotations

import json
from pathlib import Path

from metabuilder.migrations import upgrade
from metabuilder.store import audit as audit_rows
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.worker.settings import Settings
from tests.conftest import git
from tests.service.test_promote import healed_run
from tests.worker.test_cli import metabuilder


async def test_promote_from_the_cli(tmp_path: Path, user_repo: Path) -> None:
    env = {"META_BUILDER_HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    settings = Settings.from_env(env)
    upgrade(settings.database_url)
    sessions = session_factory(make_engine(settings.database_url))
    shared = tmp_path / "shared.git"
    head = await healed_run(sessions, user_repo, shared, "r1")

    done = metabuilder("promote", "r1", "--user", "ops", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"run_id": "r1", "target_branch": "feature", "commit": head, "previous": None,
                                       "risks_approved": [], "approved_by": [], "confidence": None}
    assert git(shared, "rev-parse", "refs/heads/feature") == head
    with transaction(sessions) as s:
        [event] = audit_rows.audit_events(s, tenant="acme", event="run.promoted")
        assert event.actor == "cli:ops"

    again = metabuilder("promote", "r1", env=env)
    assert again.returncode != 0 and "promoted before" in again.stderr and "Traceback" not in again.stderr
    bad = metabuilder("promote", "r1", "--to", "bad..name", env=env)
    assert bad.returncode == 2 and "is not a valid git branch name" in bad.stderr, bad.stderr
