"""A run's timeline carries its chaos injections and their recoveries (seed 002's chaos joins it)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.chaos import Fault, FaultType
from metabuilder.domain.runs import RunStatus
from metabuilder.service.timeline import run_timeline
from metabuilder.store import chaos
from metabuilder.store.db import transaction
from tests.service.conftest import record


def test_injections_and_recoveries_are_on_the_runs_timeline(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as s:
        record(s, "acme-chaos", "acme", RunStatus.RUNNING)
        chaos.record_injection(s, tenant="acme", run_id="acme-chaos", step_index=0, step_name="build", attempt=1,
                               fault=Fault(FaultType.TRANSIENT_ERROR, 0.0), worker="w1")
        chaos.record_injection(s, tenant="acme", run_id="other-run", step_index=0, step_name="build", attempt=1,
                               fault=Fault(FaultType.DISK_FULL, 0.0), worker="w1")
        chaos.mark_recovered(s, "acme-chaos", "build", 2)
    with transaction(sessions) as s:
        events = [e for e in run_timeline(s, "acme-chaos", "acme") if e.kind.startswith("chaos.")]
    assert [(e.kind, e.step, e.data["fault_type"]) for e in events] == [
        ("chaos.injected", "build", "transient_error"), ("chaos.recovered", "build", "transient_error")]
    assert "transient_error fault" in events[0].summary and "attempt 2" in events[1].summary
    assert events[0].at <= events[1].at
