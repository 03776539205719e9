"""Reporting facts newly written to the DB projection: a metric update and one structured log
line each, with the seed-001 fields (``run_id``, ``step_id``, ``signal_type``, ``strategy``,
``outcome``, ``attempt``).

Callers pass only what their write found new (see ``telemetry.metrics``), so a fact written
twice is reported once.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from metabuilder.domain.approvals import GateKind, GateStatus, GateView
from metabuilder.domain.breakers import Transition
from metabuilder.domain.canary import Sample
from metabuilder.domain.payloads import AutofixEvent
from metabuilder.domain.runs import RunStatus
from metabuilder.telemetry import metrics

log = structlog.get_logger("metabuilder.events")

NO_SIGNAL = "none"
"""The ``signal_type`` label of an entry that has none (a step that could not be classified)."""


def autofix_events(run_id: str, events: Iterable[AutofixEvent]) -> None:
    for ev in events:
        signal = ev.signal_type or NO_SIGNAL
        metrics.AUTOFIX_ATTEMPTS.labels(signal, ev.strategy, ev.outcome).inc()
        if ev.strategy == "retry" and ev.backoff_seconds is not None:
            metrics.AUTOFIX_BACKOFF.labels(signal).observe(ev.backoff_seconds)
        if ev.strategy == "replan" and ev.outcome == "replanned":
            metrics.AUTOFIX_REPLANS.labels(signal).inc()
        log.info(ev.audit or f"autofix.{ev.strategy}", run_id=run_id, step_id=ev.step, signal_type=ev.signal_type,
                 strategy=ev.strategy, outcome=ev.outcome, attempt=ev.attempt, backoff_seconds=ev.backoff_seconds,
                 detail=ev.detail)


def run_status(run_id: str, previous: str | None, status: RunStatus, *, autofix: bool,
               failed_step: str | None = None, error: str | None = None) -> None:
    """A run's row was written; count and log it only if its status changed."""
    if previous == status.value:
        return
    metrics.RUN_TRANSITIONS.labels(status.value).inc()
    if status.is_final and autofix:
        metrics.AUTOFIX_RUNS.labels(status.value).inc()
    fields = {"run_id": run_id, "status": status.value, "previous": previous}
    if failed_step:
        fields |= {"step_id": failed_step, "error": error}
    log.info("run.status", **fields)


def canary_sample(sample: Sample) -> None:
    """A finished run's canary sample was written (``store.canary``)."""
    metrics.CANARY_RUNS.labels(sample.version, sample.outcome).inc()
    metrics.CANARY_RUN_SECONDS.labels(sample.version).observe(sample.duration_seconds)
    log.info("canary.sample", version=sample.version, outcome=sample.outcome,
             duration_seconds=round(sample.duration_seconds, 3), attempts=sample.attempts, repairs=sample.repairs)


def gate_recorded(run_id: str, gate: GateView) -> None:
    """A gate's audit event was new: it opened, or it was decided, expired or cancelled."""
    status = "requested" if gate.status == GateStatus.PENDING else gate.status
    metrics.APPROVAL_REQUESTS.labels(status, gate.kind).inc()
    log.info(f"approval.{status}", run_id=run_id, step_id=gate.step, gate_id=gate.gate_id, kind=gate.kind,
             signal_type=gate.signal_type, strategy="escalate" if gate.kind == GateKind.ESCALATION else None,
             outcome=gate.status, decided_by=gate.decided_by)


def step_finished(run_id: str, step: str, queue: str, attempt: int, status: str, *, seconds: float,
                  exit_code: int | None = None, signal_type: str | None = None) -> None:
    metrics.STEP_ATTEMPTS.labels(queue, status).inc()
    metrics.OPERATION_SECONDS.labels("step").observe(seconds)
    log.info("step.finished", run_id=run_id, step_id=step, attempt=attempt, outcome=status, exit_code=exit_code,
             signal_type=signal_type, seconds=round(seconds, 3))


def breaker_transition(transition: Transition, run_id: str | None = None) -> None:
    """A circuit breaker changed state (written once: the store's compare-and-set decided it)."""
    metrics.BREAKER_TRANSITIONS.labels(str(transition.key.failure_class), str(transition.after)).inc()
    log.info("breaker.transition", breaker=str(transition.key), before=str(transition.before),
             after=str(transition.after), reason=transition.reason, run_id=run_id)
