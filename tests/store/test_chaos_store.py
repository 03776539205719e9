"""Chaos injections and scopes on SQLite and the real PostgreSQL: written once, settled once,
cleaned after the retention."""

from __future__ import annotations

from datetime import timedelta

from metabuilder.domain.chaos import ChaosSettings, Fault, FaultType
from metabuilder.domain.runs import RunStatus
from metabuilder.store import chaos, repository
from metabuilder.store.db import transaction
from metabuilder.store.models import ChaosEvent, ChaosScope, utcnow
from tests.store.test_store import _record


def _inject(s, run_id: str, attempt: int, fault: FaultType = FaultType.TRANSIENT_ERROR) -> bool:  # type: ignore[no-untyped-def]
    return chaos.record_injection(s, tenant="acme", run_id=run_id, step_index=0, step_name="a", attempt=attempt,
                                  fault=Fault(fault), worker="w")


def test_an_injection_is_written_once_and_settled_by_the_next_pass(sessions) -> None:  # type: ignore[no-untyped-def]
    run_id = f"run-{id(sessions)}"
    with transaction(sessions) as s:
        assert _inject(s, run_id, 1) and not _inject(s, run_id, 1)
        assert _inject(s, run_id, 2, FaultType.RATE_LIMIT)
    with transaction(sessions) as s:
        settled = chaos.mark_recovered(s, run_id, "a", 3)
    assert sorted(t for t, _ in settled) == [FaultType.RATE_LIMIT, FaultType.TRANSIENT_ERROR]
    with transaction(sessions) as s:
        assert chaos.mark_recovered(s, run_id, "a", 3) == []  # counted once
        rows = chaos.events(s, run_id=run_id)
        assert [(r.outcome, r.recovered_attempt) for r in rows] == [("recovered", 3), ("recovered", 3)]
        assert all(r.recovery_seconds is not None and r.recovery_seconds >= 0 for r in rows)


def test_a_run_that_ends_first_leaves_its_injections_unrecovered(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        repository.record_run(s, _record(RunStatus.RUNNING))
        _inject(s, "run-1", 1, FaultType.SECURITY_FINDING)
    with transaction(sessions) as s:
        assert chaos.settle_ended_runs(s) == 0  # still running: pending
        repository.record_run(s, _record(RunStatus.FAILED))
    with transaction(sessions) as s:
        assert chaos.settle_ended_runs(s) == 1
        [row] = chaos.events(s, run_id="run-1")
        assert (row.outcome, row.detail) == ("unrecovered", "the run ended failed first")


def test_expired_injections_are_deleted(sessions) -> None:  # type: ignore[no-untyped-def]
    run_id = f"old-{id(sessions)}"
    with transaction(sessions) as s:
        _inject(s, run_id, 1)
        _inject(s, run_id, 2)
        s.query(ChaosEvent).filter(ChaosEvent.run_id == run_id, ChaosEvent.attempt == 1).update(
            {ChaosEvent.injected_at: utcnow() - timedelta(days=8)})
    with transaction(sessions) as s:
        assert chaos.delete_expired(s, utcnow() - timedelta(days=7)) >= 1
        assert [r.attempt for r in chaos.events(s, run_id=run_id)] == [2]


def test_a_scope_is_replaced_per_tenant_and_run_and_null_columns_take_the_settings(sessions) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        before, _ = chaos.put_scope(s, ChaosScope(tenant_id="acme", run_id="", probability=None, weights=None,
                                                  seed=None, steps=[], created_by="a"))
        assert before is None
        before, _ = chaos.put_scope(s, ChaosScope(tenant_id="acme", run_id="", probability=0.3, weights=None,
                                                  seed=None, steps=["build"], created_by="b"))
        assert before is not None and before.created_by == "a"
    defaults = ChaosSettings(probability=0.05, seed=9)
    with transaction(sessions) as s:
        [row] = chaos.scopes(s, "acme")
        scope = chaos.to_scope(row, defaults)
        assert (scope.probability, scope.seed, scope.steps, scope.weights) == (0.3, 9, ("build",), defaults.weights)
        assert chaos.delete_scope(s, "acme") is not None and chaos.delete_scope(s, "acme") is None
