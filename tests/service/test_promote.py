"""Promoting a succeeded run: a fast-forward of its target branch in a real shared repository
(real git), refused when the target moved, audited; on a real (SQLite, migrated) projection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.adapters.git import checked_out_branch, publish, snapshot
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import AttemptStatus, RunStatus
from metabuilder.migrations import upgrade
from metabuilder.service.errors import BadRequest, Conflict, NotFound
from metabuilder.service.promote import approvals, promote
from metabuilder.store import audit as audit_rows
from metabuilder.store import runs
from metabuilder.store import steps as steps_rows
from metabuilder.store.db import make_engine, session_factory, transaction
from tests.conftest import git
from tests.service.conftest import PLAN


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


async def healed_run(db: sessionmaker[Session], user_repo: Path, shared: Path, run_id: str,
               status: RunStatus = RunStatus.SUCCEEDED) -> str:
    """A run of ``user_repo`` (on its branch ``feature``) whose healed head is one commit on top."""
    git(user_repo, "checkout", "--quiet", "-B", "feature")
    top, base = await snapshot(user_repo)
    branch = f"metabuilder/runs/{run_id}"
    await publish(top, base, str(shared), branch)
    (user_repo / "fixed.txt").write_text(run_id)
    git(user_repo, "add", "fixed.txt")
    git(user_repo, "commit", "--quiet", "-m", "metabuilder: fix")
    head = git(user_repo, "rev-parse", "HEAD")
    git(user_repo, "push", "--quiet", str(shared), f"HEAD:refs/heads/{branch}")
    git(user_repo, "reset", "--quiet", "--hard", base)
    with transaction(db) as session:
        runs.record_run(session, RunRecord(
            run_id=run_id, tenant="acme", status=status, plan=parse_plan(PLAN), plan_source=PLAN,
            workflow_id=f"build-run-{run_id}", repo_url=str(shared), branch=branch, base_commit=base,
            head_commit=head, source=str(top), source_branch=await checked_out_branch(top)))
    return head


async def test_promote_fast_forwards_the_branch_the_run_started_from(
        db: sessionmaker[Session], user_repo: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared.git"
    head = await healed_run(db, user_repo, shared, "r1")
    with pytest.raises(NotFound):
        await promote(db, "r1", tenant="globex", actor="eve")
    done = await promote(db, "r1", tenant="acme", actor="ada")
    assert (done.target_branch, done.commit, done.previous, done.risks) == ("feature", head, None, [])
    assert git(shared, "rev-parse", "refs/heads/feature") == head
    with pytest.raises(Conflict, match="at run r1's head .* already"):
        await promote(db, "r1", tenant="acme", actor="ada")
    with transaction(db) as session:
        [event] = audit_rows.audit_events(session, tenant="acme", event="run.promoted")
        assert (event.actor, event.target, event.before, event.after) == (
            "ada", "r1", {"branch": "feature", "commit": None}, {"branch": "feature", "commit": head})

    # A second run from the same base: its head does not contain r1's fix, so feature moved.
    await healed_run(db, user_repo, shared, "r2")
    with pytest.raises(Conflict, match="moved since the run started; fast-forward only"):
        await promote(db, "r2", tenant="acme", actor="ada")
    assert git(shared, "rev-parse", "refs/heads/feature") == head
    other = await promote(db, "r2", tenant="acme", actor="ada", target_branch="release/r2")
    assert git(shared, "rev-parse", "refs/heads/release/r2") == other.commit


@pytest.mark.parametrize(("target", "error", "message"), [
    ("metabuilder/runs/x", BadRequest, "are Meta-Builder's own"),
    ("bad..name", BadRequest, "is not a valid git branch name"),
    ("nul\x00byte", BadRequest, "has a control character"),
    ("lone\udc80", BadRequest, "not valid UTF-8"),
])
async def test_promote_refuses_a_bad_target(db: sessionmaker[Session], user_repo: Path, tmp_path: Path,
                                            target: str, error: type[Exception], message: str) -> None:
    await healed_run(db, user_repo, tmp_path / "shared.git", "r1")
    with pytest.raises(error, match=message):
        await promote(db, "r1", tenant="acme", actor="ada", target_branch=target)


async def test_only_a_succeeded_run_with_a_known_branch_is_promoted(
        db: sessionmaker[Session], user_repo: Path, tmp_path: Path) -> None:
    await healed_run(db, user_repo, tmp_path / "shared.git", "failed", RunStatus.FAILED)
    with pytest.raises(Conflict, match="^run failed is failed; only a succeeded run can be promoted$"):
        await promote(db, "failed", tenant="acme", actor="ada")
    git(user_repo, "checkout", "--quiet", "--detach")
    assert await checked_out_branch(user_repo) == ""
    with transaction(db) as session:
        runs.record_run(session, RunRecord(
            run_id="detached", tenant="acme", status=RunStatus.SUCCEEDED, plan=parse_plan(PLAN), plan_source=PLAN,
            workflow_id="build-run-detached", repo_url=str(tmp_path / "shared.git"), branch="b",
            base_commit="a" * 40, head_commit="a" * 40))
    with pytest.raises(BadRequest, match="detached HEAD .* name the branch to promote it to"):
        await promote(db, "detached", tenant="acme", actor="ada")


def make_risky(db: sessionmaker[Session], run_id: str) -> None:
    """Give ``run_id`` a repair that makes it risky: a patch of the dependency manifest after a
    LINT failure the classifier was unsure of."""
    from datetime import UTC, datetime

    from metabuilder.domain.outcomes import EventOutcome, Strategy
    from metabuilder.domain.payloads import AutofixEvent, AutofixRecord
    from metabuilder.domain.taxonomy import FailureType
    from metabuilder.store import autofix

    diff = "--- a/requirements.txt\n+++ b/requirements.txt\n@@ -1 +1 @@\n-requests\n+requests==2.32.3\n"
    with transaction(db) as session:
        attempt = steps_rows.StepAttempt(run_id=run_id, step_index=0, attempt=1, name="build", queue="cpu",
                                         command="true", commit_before="a" * 40, worker="w")
        steps_rows.step_started(session, attempt)
        steps_rows.step_finished(session, attempt, status=AttemptStatus.SUCCEEDED, exit_code=0, duration_seconds=0.1,
                                 commit_after="b" * 40, log_tail="", log_path="")
        autofix.record_autofix(session, AutofixRecord(run_id=run_id, tenant="acme", events=[
            AutofixEvent(seq=1, at=datetime.now(UTC), step="build", strategy=Strategy.PATCH,
                         outcome=EventOutcome.FIXED, signal_type=FailureType.LINT, confidence=0.55)]))
        autofix.record_repair_attempt(session, autofix.RepairRecord(
            run_id=run_id, seq=1, step_index=0, step_name="build", signal_type="LINT", fixer="fix_command",
            outcome="applied", reason="", diff=diff, files=["requirements.txt"], commit_before="a" * 40,
            commit_after="b" * 40))


async def test_a_risky_run_is_promoted_by_an_admin_other_than_its_approver(
        db: sessionmaker[Session], user_repo: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared.git"
    head = await healed_run(db, user_repo, shared, "r1")
    make_risky(db, "r1")
    with pytest.raises(Conflict, match=r"needs its risks approved .*dependency_manifest.*another promotes\)$"):
        await promote(db, "r1", tenant="acme", actor="ada")
    with pytest.raises(BadRequest, match="approve_risks needs a reason"):
        await promote(db, "r1", tenant="acme", actor="ada", approve_risks=True)
    with pytest.raises(Conflict, match=r"\(your approval is recorded; a risky run is promoted by an admin other"):
        await promote(db, "r1", tenant="acme", actor="ada", approve_risks=True, reason="the pin is intended")
    with pytest.raises(Conflict, match="needs its risks approved"):  # ada's own approval is not enough for ada
        await promote(db, "r1", tenant="acme", actor="ada")
    assert git(shared, "branch", "--list", "feature") == ""
    done = await promote(db, "r1", tenant="acme", actor="bob")
    assert (done.commit, done.approved_by, done.risks_approved) == (head, ["ada"], True)
    assert any("dependency_manifest" in r for r in done.risks)
    with transaction(db) as session:
        events = [(a.event, a.actor) for a in audit_rows.audit_events(session, tenant="acme", run_id="r1")]
        [promoted] = audit_rows.audit_events(session, tenant="acme", event="run.promoted")
        [approval] = approvals(session, "r1")
    assert events == [("run.promotion_approved", "ada"), ("run.promoted", "bob")]
    assert promoted.data["approved_by"] == ["ada"] and approval.reason == "the pin is intended"
