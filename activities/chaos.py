"""What the step activity asks the chaos engine (``domain.chaos``) and tells it.

Before a step's command starts, :meth:`Chaos.command` looks up the scope that applies to the run
(a worker trusts its look for a second), asks the pure :func:`~metabuilder.domain.chaos.decide`
whether this attempt gets a fault, records the injection and hands back the command that makes
it. Nothing else is short-circuited: the activity runs that command like any other, and the
classifier, the retry policy and the repair ladder react to what it did. After an attempt passes,
:meth:`Chaos.recovery` settles the step's pending injections as recovered (in the transaction of
the attempt's final row). A fresh look at the scopes that gives no fault costs no thread or query.

Expired injections are deleted at write time: when a worker records one, at most once a minute.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.chaos import (
    ChaosScope,
    ChaosSettings,
    Fault,
    FaultType,
    choose_scope,
    decide,
    fault_command,
)
from metabuilder.domain.payloads import StepInput
from metabuilder.store import chaos as store
from metabuilder.store.db import transaction
from metabuilder.store.models import utcnow
from metabuilder.telemetry import metrics

SCOPE_CHECK_SECONDS = 1.0
"""How long a worker trusts its last look at a tenant's chaos scopes."""
CLEANUP_EVERY_SECONDS = 60.0


class Chaos:
    """The chaos engine of one worker process (only built when ``META_V4_CHAOS_ENABLED``)."""

    def __init__(self, sessions: sessionmaker[Session], settings: ChaosSettings, worker: str = "") -> None:
        self.sessions = sessions
        self.settings = settings
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self._seen: dict[str, tuple[float, list[ChaosScope]]] = {}
        self._cleaned_at = 0.0

    def _fresh(self, tenant: str) -> list[ChaosScope] | None:
        """The tenant's scopes as last seen, while that look is to be trusted; else None."""
        seen = self._seen.get(tenant)
        return seen[1] if seen is not None and time.monotonic() - seen[0] < SCOPE_CHECK_SECONDS else None

    def _scopes(self, tenant: str) -> list[ChaosScope]:
        now = time.monotonic()
        if (fresh := self._fresh(tenant)) is not None:
            return fresh
        with transaction(self.sessions) as session:
            found = [store.to_scope(r, self.settings) for r in store.scopes(session, tenant)]
        self._seen[tenant] = (now, found)
        return found

    async def command(self, inp: StepInput, number: int) -> str:
        """The command attempt ``number`` runs: the step's own, or the one that makes its fault.
        With a fresh look at the scopes and no fault to inject (most steps), no thread and no query."""
        fresh = self._fresh(inp.run.tenant)
        if fresh is not None and self._fault(fresh, inp, number) is None:
            return inp.step.command
        return await asyncio.to_thread(self._command, inp, number)

    def _fault(self, scopes: list[ChaosScope], inp: StepInput, number: int) -> Fault | None:
        scope = choose_scope(scopes, inp.run.tenant, inp.run.run_id, time.time())
        return decide(scope, inp.run.run_id, inp.step.name, number, self.settings.params)

    def _command(self, inp: StepInput, number: int) -> str:
        fault = self._fault(self._scopes(inp.run.tenant), inp, number)
        if fault is None:
            return inp.step.command
        with transaction(self.sessions) as session:
            new = store.record_injection(session, tenant=inp.run.tenant, run_id=inp.run.run_id,
                                         step_index=inp.step_index, step_name=inp.step.name, attempt=number,
                                         fault=fault, worker=self.worker)
            self._cleanup(session)
        if new:
            metrics.CHAOS_INJECTIONS.labels(fault.type.value).inc()
        return fault_command(fault, inp.step.command, step_timeout=inp.step.timeout_seconds,
                             worker_pid=os.getpid(), step=inp.step.name)

    def recovery(self, run_id: str, step_name: str, attempt: int) -> Recovery:
        """Attempt ``attempt`` of the step passed: its pending injections recovered, written in the
        transaction of the attempt's final row."""
        return Recovery(run_id, step_name, attempt)

    def _cleanup(self, session: Session) -> None:
        now = time.monotonic()
        if now - self._cleaned_at < CLEANUP_EVERY_SECONDS:
            return
        self._cleaned_at = now
        store.delete_expired(session, utcnow() - timedelta(days=self.settings.retention_days))
        store.settle_ended_runs(session)


class Recovery:
    """A passed attempt's pending injections settled as recovered (called with a session), then
    counted in the metrics (:meth:`count`, once its transaction is committed)."""

    def __init__(self, run_id: str, step_name: str, attempt: int) -> None:
        self.run_id, self.step_name, self.attempt = run_id, step_name, attempt
        self.settled: list[tuple[FaultType, float]] = []

    def __call__(self, session: Session) -> None:
        self.settled = store.mark_recovered(session, self.run_id, self.step_name, self.attempt)

    def count(self) -> None:
        for fault, seconds in self.settled:
            metrics.CHAOS_RECOVERIES.labels(fault.value).inc()
            metrics.CHAOS_RECOVERY_SECONDS.labels(fault.value).observe(seconds)
        self.settled = []
