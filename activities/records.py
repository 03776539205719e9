"""Bookkeeping of runs in the DB projection (run as local activities: no server round trip).

Each write also reports what it found new (metrics and a log line, ``telemetry.events``): the
rows are keyed by natural ids, so a write repeated by a retry reports nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from metabuilder.activities.notifications import Notifier
from metabuilder.domain.approvals import GateStatus
from metabuilder.domain.notifications import NotificationEvent
from metabuilder.domain.payloads import AutofixEvent, AutofixRecord, GateRecord, RunRecord, SlaRecord
from metabuilder.domain.runs import RunStatus
from metabuilder.store import approvals, budgets, repository
from metabuilder.store import canary as canary_rows
from metabuilder.store import sla as sla_rows
from metabuilder.store.db import transaction
from metabuilder.telemetry import events
from metabuilder.telemetry.metrics import SLA_VIOLATIONS, SLA_WARNINGS, timed


class RecordActivities:
    def __init__(self, sessions: sessionmaker[Session], version: tuple[str, str] | None = None,
                 notifier: Notifier | None = None) -> None:
        self.sessions = sessions
        self.version = version
        """(deployment, build id) of this process's versioned workers: a run that ends here leaves
        a canary sample of that version (its workflow is pinned to it; None: unversioned, no sample)."""
        self.notifier = notifier
        """Tells the tenant's webhooks of gates opened and runs failed or rolled back (None: nobody)."""

    @activity.defn(name="record_run")
    async def record_run(self, record: RunRecord) -> None:
        """Upsert the run's row (and its tenant and plan). Idempotent: keyed by run id."""

        def work() -> tuple[str | None, bool]:
            with timed("record_run"), transaction(self.sessions) as session:
                previous = repository.record_run(session, record)
                autofix = record.status.is_final and repository.has_autofix(session, record.run_id)
                if self.version is not None:
                    sample = canary_rows.record_sample(session, record.run_id, *self.version, record.status.value)
                    if sample is not None:
                        events.canary_sample(sample)
            if record.status.is_final:  # what the run still holds goes back to its budgets
                budgets.release_run(self.sessions, record.run_id)
            return previous, autofix

        previous, autofix = await asyncio.to_thread(work)
        events.run_status(record.run_id, previous, record.status, autofix=autofix,
                          failed_step=record.failed_step, error=record.error)
        ended = {RunStatus.FAILED: NotificationEvent.RUN_FAILED,
                 RunStatus.ROLLED_BACK: NotificationEvent.RUN_ROLLED_BACK}
        # Not only on the transition: a retry after a crash between the write and this still
        # notifies, and the delivery's stable id keeps it to once.
        if self.notifier is not None and record.status in ended:
            await self.notifier.notify(record.tenant, ended[record.status], record.run_id, record.run_id, {
                "run_id": record.run_id, "status": record.status.value, "failed_step": record.failed_step,
                "error": record.error})

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

        gate = record.gate
        if await asyncio.to_thread(work):
            events.gate_recorded(gate.run_id, gate)
        if self.notifier is not None and gate.status == GateStatus.PENDING:  # once: the delivery's id is stable
            await self.notifier.notify(record.tenant, NotificationEvent.GATE_OPENED, gate.gate_id, gate.run_id, {
                "run_id": gate.run_id, "gate_id": gate.gate_id, "step": gate.step, "kind": str(gate.kind),
                "action": str(gate.action), "reason": gate.reason,
                "signal_type": str(gate.signal_type) if gate.signal_type else None,
                "expires_at": gate.expires_at.isoformat(), "on_expiry": str(gate.on_expiry)})
            await self.notifier.watch_gate(gate, record.tenant)

    @activity.defn(name="record_sla")
    async def record_sla(self, record: SlaRecord) -> None:
        """Write a run's SLA events (idempotent); count the deadline warnings and violations that are new."""

        def work() -> list[tuple[str, dict[str, Any]]]:
            with timed("record_sla"), transaction(self.sessions) as session:
                new = sla_rows.record_sla_events(session, record.run_id, record.tenant, record.events)
                return [(e.kind, dict(e.data)) for e in new]

        for kind, data in await asyncio.to_thread(work):
            sla = str(data.get("sla", ""))
            if kind == "sla.violated":
                SLA_VIOLATIONS.labels(sla).inc()
                if self.notifier is not None:
                    await self.notifier.notify(record.tenant, NotificationEvent.SLA_VIOLATED, f"{record.run_id}/sla",
                                               record.run_id, {"run_id": record.run_id, **data})
            elif kind == "sla.warning":
                SLA_WARNINGS.labels(sla).inc()
