"""Replay bundles of real runs: recorded by the activities, content-addressed, re-driven offline
with an empty decision diff, a non-empty one after a deliberate change, exported and imported
into another database, and the run's Temporal histories replayed on the current code."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select
from temporalio.client import Client

from metabuilder.domain import policy as policy_tables
from metabuilder.domain.knowledge import KnowledgeBase, bundled_knowledge_base
from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import AutofixSettings, effective_settings
from metabuilder.domain.runs import RunStatus
from metabuilder.migrations import upgrade
from metabuilder.service.replay import export_bundle, import_bundle, redrive
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.store import replay as bundle
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.store.models import ReplayBlob, ReplayEntry
from metabuilder.worker.cli.replay import fetch_histories, replay_histories
from metabuilder.worker.settings import Settings
from tests.conftest import git
from tests.worker.test_cli import metabuilder

AUTOFIX = AutofixSettings(enabled=True, max_total_attempts=6, max_per_step_attempts=3, backoff_cap_seconds=60.0)


async def healed_run(client: Client, settings: Settings, repo: Path, tmp_path: Path) -> RunView:
    """A run with a retried TRANSIENT failure and a LINT failure fixed by its fix command."""
    marker = tmp_path / "reset-once"
    (repo / "style.sh").write_text("grep -q 'x = 1' app.py || { echo 'app.py:1:1: E225 missing whitespace "
                                   "around operator'; exit 1; }\n")
    (repo / "fetch.sh").write_text("if [ ! -e \"$MARKER\" ]; then touch \"$MARKER\"; "
                                   "echo 'curl: (56) Recv failure: Connection reset by peer'; exit 56; fi\n")
    (repo / "app.py").write_text("x=1\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "style check")
    plan = f"""name: replayed
steps:
  - name: fetch
    command: bash fetch.sh
    env: {{MARKER: "{marker}"}}
  - name: style
    command: bash style.sh
    fix: "sed -i 's/x=1/x = 1/' app.py"
"""
    opts = SubmitOptions.of(settings, autofix=effective_settings(AUTOFIX), search_attributes=False)
    run = await submit(client, plan, "plan.yaml", repo, opts, run_id=f"rb-{uuid.uuid4().hex[:10]}")
    view = await run.handle.result()
    assert view.status is RunStatus.SUCCEEDED
    return view


async def test_a_run_replays_with_no_difference_and_differs_after_a_deliberate_change(
        client: Client, settings: Settings, sessions, workers, user_repo: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    view = await healed_run(client, settings, user_repo, tmp_path)
    with transaction(sessions) as session:
        rows = bundle.entries(session, view.run_id)
        kinds = sorted(r.kind for r in rows)
        blob_rows = session.scalar(select(func.count()).select_from(ReplayBlob))
        refs = {d for r in rows for d in r.blobs.values()}
    # Every attempt is an entry (a busy machine may add attempts: a late heartbeat is retried).
    assert kinds.count("apply") == kinds.count("fix") == 1 and kinds.count("step") >= 4, kinds
    classified = [r for r in rows if r.kind == "step" and r.facts["classification"]]
    [retried] = [r for r in rows if r.kind == "step" and r.facts["classification"]
                 and r.facts["classification"]["type"] == "TRANSIENT"]
    assert retried.facts["decision"]["retry"] == {"retry": True, "delay": 1.0}
    assert retried.facts["exit_code"] == 56 and retried.facts["command"] == "bash fetch.sh"
    assert blob_rows == len(refs)  # each blob once, however many entries name it

    same = redrive(sessions, view.run_id)
    assert same.differences == [] and same.redriven == len(classified) + 1  # the failures, the patch review

    # The policy table of the current code says TRANSIENT is not retried any more.
    monkeypatch.setitem(policy_tables.DEFAULT_MAX_RETRIES, "TRANSIENT", 0)
    changed = redrive(sessions, view.run_id)
    assert [(d.what, d.recorded, d.replayed) for d in changed.differences] == [
        ("retry.delay", 1.0, None), ("retry.retry", True, False)]
    monkeypatch.undo()

    # A knowledge base without the network patterns reads the reset connection from other evidence.
    kb = KnowledgeBase(tuple(e for e in bundled_knowledge_base().entries if not e.id.startswith("net.")))
    what = {d.what for d in redrive(sessions, view.run_id, kb=kb).differences}
    assert "classification.patterns" in what, what

    # The run's histories replay on the current workflow code.
    histories = await fetch_histories(client, view.run_id)
    assert list(histories) == [f"build-run-{view.run_id}", f"build-run-{view.run_id}-repair-1"]
    assert set((await replay_histories(histories)).values()) == {None}

    # Exported, imported into another database ("another machine"): the same, offline.
    doc = json.loads(json.dumps(export_bundle(sessions, view.run_id, {k: h.to_json() for k, h in histories.items()})))
    other = replace(settings, database_url=f"sqlite:///{tmp_path / 'other.db'}")
    upgrade(other.database_url)
    engine = make_engine(other.database_url)
    try:
        elsewhere = session_factory(engine)
        assert import_bundle(elsewhere, doc) == (view.run_id, len(rows) + 2)
        assert import_bundle(elsewhere, doc)[1] == 0  # idempotent
        again = redrive(elsewhere, view.run_id)
        assert again.differences == [] and len(again.histories) == 2
        with transaction(elsewhere) as session:
            assert session.scalar(select(func.count()).select_from(ReplayEntry)) == len(rows) + 2
    finally:
        engine.dispose()

    bad = json.loads(json.dumps(doc))
    first = next(iter(bad["blobs"]))
    bad["blobs"][first] = "aGVsbG8="
    with pytest.raises(ValueError, match="does not match its sha256"):
        import_bundle(sessions, bad)

    # The CLI: replay (exit 0, no diff), export and import round trip.
    env = {"META_BUILDER_HOME": str(settings.home), "TEMPORAL_ADDRESS": settings.temporal_address or ""}
    res = metabuilder("replay", view.run_id, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "decision diff: none" in res.stdout and f"✓ build-run-{view.run_id}-repair-1 replays" in res.stdout
    out = tmp_path / "bundle.json"
    res = metabuilder("replay", "export", view.run_id, "-o", str(out), env=env)
    assert res.returncode == 0 and "2 histories" in res.stdout, res.stdout + res.stderr
    res = metabuilder("replay", "import", str(out), "--as", "rb-imported-copy", env=env)
    assert res.returncode == 0 and f"imported {len(rows) + 2} new entries" in res.stdout, res.stdout + res.stderr
    res = metabuilder("replay", "rb-imported-copy", "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["histories"]["source"] == "bundle"
    res = metabuilder("replay", "no-such-run", env=env)
    assert res.returncode == 2 and "no replay bundle for run 'no-such-run'" in res.stderr
