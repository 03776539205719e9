"""The record activities count what they write once, however often they are run with the same
input (a retried activity, a local activity run again after a lost workflow task)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker
from temporalio.testing import ActivityEnvironment

from metabuilder.activities.records import RecordActivities
from metabuilder.domain.approvals import GateKind, GateStatus, GateView
from metabuilder.domain.payloads import AutofixEvent, AutofixRecord, GateRecord, RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.migrations import upgrade
from metabuilder.store import repository
from metabuilder.store.db import make_engine, session_factory, transaction

PLAN = parse_plan("name: p\nsteps:\n  - {name: fetch, command: 'true'}\n")
RUN = RunRecord(run_id="run-metrics", tenant="acme", status=RunStatus.RUNNING, plan=PLAN, plan_source="",
                workflow_id="build-run-run-metrics", repo_url="/repo.git", branch="b", base_commit="a" * 40,
                head_commit="a" * 40)


@pytest.fixture
def records(tmp_path: Path) -> Iterator[RecordActivities]:
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions: sessionmaker[Session] = session_factory(engine)
    yield RecordActivities(sessions)
    engine.dispose()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_fact_is_counted_once_however_often_it_is_written(records: RecordActivities) -> None:
    env = ActivityEnvironment()
    retry = AutofixEvent(seq=0, at=datetime(2026, 11, 21, tzinfo=UTC), step="fetch", strategy="retry",
                         outcome="retried", signal_type="TRANSIENT", attempt=1, backoff_seconds=7.0,
                         audit="autofix.retry")
    replan = replace(retry, seq=1, strategy="replan", outcome="replanned", backoff_seconds=None,
                     audit="autofix.replanned")
    gate = GateView(gate_id="run-metrics-gate-1", run_id="run-metrics", step="fetch", kind=GateKind.ESCALATION,
                    action="rerun", reason="stuck", opened_at=datetime(2026, 11, 21, tzinfo=UTC),
                    expires_at=datetime(2026, 11, 22, tzinfo=UTC), signal_type="UNKNOWN")
    decided = replace(gate, status=GateStatus.REJECTED.value, decided_by="ann", decision_reason="no")
    counted = {
        "retried": lambda: sample("autofix_attempts_total", signal_type="TRANSIENT", strategy="retry",
                                  outcome="retried"),
        "backoffs": lambda: sample("autofix_backoff_seconds_count", signal_type="TRANSIENT"),
        "replans": lambda: sample("autofix_replans_total", signal_type="TRANSIENT"),
        "running": lambda: sample("metabuilder_runs_total", status="running"),
        "failed": lambda: sample("metabuilder_runs_total", status="failed"),
        "autofix_failed": lambda: sample("autofix_runs_total", status="failed"),
        "requested": lambda: sample("approval_requests_total", status="requested", kind="escalation"),
        "rejected": lambda: sample("approval_requests_total", status="rejected", kind="escalation"),
    }
    before = {k: f() for k, f in counted.items()}

    for _ in range(3):
        await env.run(records.record_run, RUN)
        await env.run(records.record_autofix, AutofixRecord(run_id=RUN.run_id, tenant="acme", events=[retry]))
        await env.run(records.record_gate, GateRecord(tenant="acme", gate=gate))
    for _ in range(2):
        # The second write carries the first entry again with the next one, as the workflow's
        # bookkeeping may after a replay: only the new entry counts.
        await env.run(records.record_autofix, AutofixRecord(run_id=RUN.run_id, tenant="acme",
                                                            events=[retry, replan]))
        await env.run(records.record_gate, GateRecord(tenant="acme", gate=decided))
        await env.run(records.record_run, replace(RUN, status=RunStatus.FAILED))

    after = {k: f() - before[k] for k, f in counted.items()}
    assert after == {"retried": 1, "backoffs": 1, "replans": 1, "running": 1, "failed": 1, "autofix_failed": 1,
                     "requested": 1, "rejected": 1}


@pytest.mark.parametrize(("end", "closed_as"), [(RunStatus.FAILED, "lost"), (RunStatus.CANCELLED, "cancelled"),
                                                (RunStatus.SUCCEEDED, "lost")])
async def test_no_attempt_of_an_ended_run_stays_running(
        records: RecordActivities, end: RunStatus, closed_as: str) -> None:
    """A worker that died with a run's last attempt (no attempt after it settles it), or a cancel
    that reached no worker: the run's final record closes the attempt, with the reason."""
    env = ActivityEnvironment()
    await env.run(records.record_run, RUN)
    with transaction(records.sessions) as s:
        for attempt in (1, 2):
            repository.step_started(s, repository.StepAttempt(
                run_id=RUN.run_id, step_index=0, attempt=attempt, name="fetch", queue="cpu", command="true",
                commit_before="a" * 40, worker="w1"))
        repository.step_finished(s, repository.StepAttempt(
            run_id=RUN.run_id, step_index=0, attempt=1, name="fetch", queue="cpu", command="true",
            commit_before="a" * 40, worker="w1"), status="failed", exit_code=1, duration_seconds=1.0,
            commit_after=None, log_tail="boom", log_path="")
    await env.run(records.record_run, replace(RUN, status=end))
    with transaction(records.sessions) as s:
        first, last = repository.run_steps(s, RUN.run_id)
        assert (first.status, first.log_tail) == ("failed", "boom")
        assert last.status == closed_as and last.finished_at is not None
        assert f"closed when the run ended {end.value}" in last.log_tail
