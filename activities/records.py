"""Bookkeeping of runs in the DB projection (run as local activities: no server round trip)."""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from domain.payloads import AutofixRecord, GateRecord, RunRecord
from store import approvals, repository
from store.db import transaction


class RecordActivities:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @activity.defn(name="record_run")
    async def record_run(self, record: RunRecord) -> None:
        """Upsert the run's row (and its tenant and plan). Idempotent: keyed by run id."""

        def work() -> None:
            with transaction(self.sessions) as session:
                repository.record_run(session, record)

        await asyncio.to_thread(work)

    @activity.defn(name="record_autofix")
    async def record_autofix(self, record: AutofixRecord) -> None:
        """Write auto-fix timeline rows, audit events, the retry state and plan deltas (idempotent)."""

        def work() -> None:
            with transaction(self.sessions) as session:
                repository.record_autofix(session, record)

        await asyncio.to_thread(work)

    @activity.defn(name="record_gate")
    async def record_gate(self, record: GateRecord) -> None:
        """Upsert an approval gate and its audit event (idempotent: keyed by the gate id)."""

        def work() -> None:
            with transaction(self.sessions) as session:
                approvals.record_gate(session, record.tenant, record.gate)

        await asyncio.to_thread(work)
