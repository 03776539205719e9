"""The runs section's queries (service.run_stats) on SQLite and PostgreSQL: the window, the
tenant, failed attempts by class, a retry that got a step past its failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.outcomes import EventOutcome, Strategy
from metabuilder.domain.payloads import AutofixEvent, AutofixRecord, RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import AttemptStatus, RunStatus
from metabuilder.domain.taxonomy import FailureType
from metabuilder.service.run_stats import tenant_run_stats
from metabuilder.store import autofix, runs, steps
from metabuilder.store.db import transaction
from metabuilder.store.models import BuildRun

PLAN = "name: st\nsteps:\n  - {name: fetch, command: 'true'}\n"


def _run(session: Session, run_id: str, tenant: str, status: RunStatus) -> None:
    runs.record_run(session, RunRecord(
        run_id=run_id, tenant=tenant, status=status, plan=parse_plan(PLAN), plan_source=PLAN,
        workflow_id=f"build-run-{run_id}", repo_url="/nowhere.git", branch="b", base_commit="a" * 40,
        head_commit="a" * 40))


def _attempt(session: Session, run_id: str, attempt: int, status: AttemptStatus, signal: str | None) -> None:
    a = steps.StepAttempt(run_id=run_id, step_index=0, attempt=attempt, name="fetch", queue="io", command="true",
                          commit_before="a" * 40, worker="w")
    steps.step_started(session, a)
    steps.step_finished(session, a, status=status, exit_code=1 if signal else 0, duration_seconds=0.1,
                        commit_after=None, log_tail="", log_path="",
                        signal=steps.AttemptSignal(signal, 0.9, "f") if signal else None)


def test_the_runs_section_reads_the_tenants_window(sessions: sessionmaker[Session]) -> None:
    now = datetime.now(UTC)
    with transaction(sessions) as s:
        _run(s, "retried", "acme", RunStatus.SUCCEEDED)
        _attempt(s, "retried", 1, AttemptStatus.FAILED, FailureType.TRANSIENT)
        autofix.record_autofix(s, AutofixRecord(run_id="retried", tenant="acme", events=[
            AutofixEvent(1, now, "fetch", Strategy.CLASSIFY, EventOutcome.FAILED, FailureType.TRANSIENT, 0.9),
            AutofixEvent(2, now, "fetch", Strategy.RETRY, EventOutcome.RETRIED)]))
        _attempt(s, "retried", 2, AttemptStatus.SUCCEEDED, None)
        _run(s, "failed", "acme", RunStatus.FAILED)
        _attempt(s, "failed", 1, AttemptStatus.FAILED, FailureType.LINT)
        _run(s, "old", "acme", RunStatus.FAILED)
        s.execute(update(BuildRun).where(BuildRun.id == "old").values(created_at=now - timedelta(days=3)))
        _run(s, "theirs", "globex", RunStatus.SUCCEEDED)
    with transaction(sessions) as s:
        got = tenant_run_stats(s, "acme", timedelta(hours=24))
        every = tenant_run_stats(s, None, timedelta(days=7))
    assert (got.total, got.by_status, got.success_ratio) == (2, {"failed": 1, "succeeded": 1}, 0.5)
    assert got.failures_by_class == {"LINT": 1, "TRANSIENT": 1}
    assert got.repairs_by_strategy == {"retry": 1} and got.resolution_by_class["TRANSIENT"].count == 1
    assert sum(sum(c.values()) for _, c in got.failures_over_time) == 2
    assert (every.total, every.by_status["succeeded"]) == (4, 2)
