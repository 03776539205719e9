"""Bookkeeping of runs in the DB projection (run as local activities: no server round trip).

Each write also reports what it found new (metrics and a log line, ``telemetry.events``): the
rows are keyed by natural ids, so a write repeated by a retry reports nothing."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from metabuilder.domain.payloads import AutofixEvent, AutofixRecord, GateRecord, RunRecord
from metabuilder.store import approvals, repository
from metabuilder.store.db import transaction
from metabuilder.telemetry import events
from metabuilder.telemetry.metrics import timed


class RecordActivities:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @activity.defn(name="record_run")
    async def record_run(self, record: RunRecord) -> None:
        """Upsert the run's row (and its tenant and plan). Idempotent: keyed by run id."""

        def work() -> tuple[str | None, bool]:
            with timed("record_run"), transaction(self.sessions) as session:
                previous = repository.record_run(session, record)
                autofix = record.status.is_final and repository.has_autofix(session, record.run_id)
            return previous, autofix

        previous, autofix = await asyncio.to_thread(work)
        events.run_status(record.run_id, previous, record.status, autofix=autofix,
                          failed_step=record.failed_step, error=record.error)

    @activity.defn(name="record_autofix")
    async def record_autofix(self, record: AutofixRecord) -> None:
        """Write auto-fix timeline rows, audit events, the retry state and plan deltas (idempotent)."""

        def work() -> list[AutofixEvent]:
            with timed("record_autofix"), transaction(self.sessions) as session:
                return repository.record_autofix(session, record)

        events.autofix_events(record.run_id, await asyncio.to_thread(work))

    @activity.defn(name="record_gate")
    async def record_gate(self, record: GateRecord) -> None:
        """Upsert an approval gate and its audit event (idempotent: keyed by the gate id)."""

        def work() -> bool:
            with timed("record_gate"), transaction(self.sessions) as session:
                return approvals.record_gate(session, record.tenant, record.gate)

        if await asyncio.to_thread(work):
            events.gate_recorded(record.gate.run_id, record.gate)
