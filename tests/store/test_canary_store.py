"""Canary samples (``mb_v4_canary_sample``) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from metabuilder.activities.records import RecordActivities
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.runs import RunStatus
from metabuilder.store import canary, repository
from metabuilder.store.db import transaction

PLAN = parse_plan("name: p\nsteps:\n  - {name: a, command: 'true'}\n")


def _record(run_id: str, status: RunStatus, tenant: str = "acme") -> RunRecord:
    return RunRecord(run_id=run_id, tenant=tenant, status=status, plan=PLAN, plan_source="",
                     workflow_id=f"build-run-{run_id}", repo_url="/repo.git", branch=f"metabuilder/runs/{run_id}",
                     base_commit="a" * 40, head_commit="b" * 40)


def test_a_finished_run_on_a_versioned_worker_leaves_one_sample(sessions) -> None:  # type: ignore[no-untyped-def]
    versioned = RecordActivities(sessions, ("mb", "2.0"))
    unversioned = RecordActivities(sessions)

    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("metabuilder_canary_runs_total", {"version": "2.0", "outcome": outcome}) or 0

    before = counted("succeeded"), counted("rolled_back"), counted("cancelled")

    async def go() -> None:
        await versioned.record_run(_record("r1", RunStatus.RUNNING))
        await versioned.record_run(_record("r5", RunStatus.RUNNING))  # still going: its version, no sample
        await versioned.record_run(_record("r1", RunStatus.SUCCEEDED))
        await versioned.record_run(_record("r1", RunStatus.SUCCEEDED))  # a retried local activity
        await versioned.record_run(_record("r2", RunStatus.ROLLED_BACK, tenant="other"))
        await versioned.record_run(_record("r3", RunStatus.CANCELLED))  # a person's decision: no sample
        await unversioned.record_run(_record("r4", RunStatus.FAILED))

    asyncio.run(go())
    # Counted once each, however often the row is written; a cancelled run is no sample.
    assert (counted("succeeded"), counted("rolled_back"), counted("cancelled")) == (
        before[0] + 1, before[1] + 1, before[2])
    with transaction(sessions) as s:
        got = canary.samples(s, "mb")
        assert [(x.version, x.outcome, x.attempts, x.repairs, x.cost_usd) for x in got] == [
            ("2.0", "succeeded", 0, 0, 0.0), ("2.0", "rolled_back", 0, 0, 0.0)]
        assert all(x.duration_seconds >= 0 for x in got)
        assert [x.outcome for x in canary.samples(s, "mb", tenant="other")] == ["rolled_back"]
        assert canary.samples(s, "mb", ["1.0"]) == [] and canary.samples(s, "other-deployment") == []
        assert canary.run_version(s, "r1") == "2.0" and canary.run_version(s, "r5") == "2.0"
        assert canary.run_version(s, "r3") == "2.0"  # shown on its page, but no sample
        assert canary.run_version(s, "r4") is None
        assert canary.record_sample(s, "no-such-run", "mb", "2.0", "succeeded") is None


def test_the_cost_is_unknown_when_a_model_call_was_not_priced(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        repository.record_run(s, _record("r1", RunStatus.RUNNING))
        repository.record_run(s, _record("r2", RunStatus.RUNNING))
        for run_id, seq, model, cost in [("r1", 1, "gpt-x", 0.02), ("r1", 2, None, 0.0), ("r2", 1, "local-model", 0.0)]:
            repository.record_repair_attempt(s, repository.RepairRecord(
                run_id=run_id, seq=seq, step_index=0, step_name="a", signal_type="LINT", fixer="llm",
                outcome="applied", reason="", diff="", files=[], commit_before="a" * 40, commit_after=None,
                model=model, tokens_in=10, tokens_out=10, cost_usd=cost))
    with transaction(sessions) as s:
        priced = canary.record_sample(s, "r1", "mb", "1.0", "succeeded")
        unpriced = canary.record_sample(s, "r2", "mb", "1.0", "succeeded")
    assert priced is not None and (priced.repairs, priced.cost_usd) == (2, 0.02)
    assert unpriced is not None and (unpriced.repairs, unpriced.cost_usd) == (1, None)
