"""A run's SLA events (``mb_v4_run_sla_events``): written once per (run, kind, key), read in order,
and the worst deadline event is the run's SLA state (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metabuilder.domain.payloads import SlaEvent
from metabuilder.store import sla
from metabuilder.store.db import transaction

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def test_events_are_written_once_and_the_state_is_the_worst(sessions) -> None:  # type: ignore[no-untyped-def]
    warning = SlaEvent("sla.warning", "deadline", T0, "at 80%", "build", {"sla": "fast"})
    violated = SlaEvent("sla.violated", "deadline", T0 + timedelta(seconds=5), "past", None, {"sla": "fast"})
    chosen = SlaEvent("model.chosen", "fix-3-llm/0", T0 + timedelta(seconds=1), "model m", "build", {"model": "m"})
    with transaction(sessions) as session:
        assert sla.run_sla_state(session, "r1") == "ok"
        assert sla.record_sla_events(session, "r1", "acme", [warning, chosen]) == [warning, chosen]
        assert sla.run_sla_state(session, "r1") == "warning"
    with transaction(sessions) as session:  # a retried write records nothing twice
        assert sla.record_sla_events(session, "r1", "acme", [warning, violated]) == [violated]
        assert sla.record_sla_events(session, "r2", "acme", [warning]) == [warning]  # another run's own
    with transaction(sessions) as session:
        rows = sla.run_sla_events(session, "r1")
        assert [(r.kind, r.step_name, r.data) for r in rows] == [
            ("sla.warning", "build", {"sla": "fast"}), ("model.chosen", "build", {"model": "m"}),
            ("sla.violated", None, {"sla": "fast"})]
        assert sla.run_sla_state(session, "r1") == "violated" and sla.run_sla_state(session, "r2") == "warning"
