"""Running one step from workflow code: shared by ``BuildRunWorkflow`` and ``RepairWorkflow``.

**The retry rung of the repair ladder lives in the step activity**, not here: ``run_step``
classifies a failed command's log and raises ``ApplicationError(type=<failure class>,
next_retry_delay=<the class's backoff>)``, retryable while the class and the run's budget allow
(``non_retryable`` otherwise). Temporal's own activity retries are then the retries. The workflow
only sets how many Temporal attempts the execution may use, from the run's remaining budget, and
reads what was retried from the result (:func:`retry_events`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.converter import value_to_type
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutError,
    is_cancelled_exception,
)

from metabuilder.domain.outcomes import EventOutcome, Strategy
from metabuilder.domain.payloads import (
    BREAKER_OPEN,
    STEP_CANNOT_START,
    STEP_FAILED,
    STEP_OUTCOME_UNKNOWN,
    AutofixEvent,
    BreakerWait,
    RunContext,
    StepInput,
    StepResult,
)
from metabuilder.domain.plans import Step
from metabuilder.domain.policy import AutofixPolicy
from metabuilder.domain.runs import task_queue
from metabuilder.domain.taxonomy import FailureType
from metabuilder.workflows.priority import temporal_priority

CHECKOUT_MARGIN = timedelta(minutes=2)
"""Time beyond a step's own timeout for checkout, commit and push."""

INFRA_FIRST_RETRY = timedelta(seconds=0.25)
INFRA_BACKOFF = 4.0
"""A lost worker's step is retried at once, nearly (its heartbeat timeout has passed already),
then after 1, 4 and 16 s: about 21 s of tolerance over four retries, for a DB or git that is down
for a while (it was 1, 2, 4 and 8 s; the first second was a second's delay for every dead worker)."""
STEP_INFRA_RETRY = RetryPolicy(
    initial_interval=INFRA_FIRST_RETRY,
    backoff_coefficient=INFRA_BACKOFF,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=[STEP_FAILED],
)
"""Retries for a step whose *worker* failed (lost heartbeat, git or DB error); a command
that exits non-zero is a step failure, not retried here."""
INFRA_ALLOWANCE = 4
"""Temporal attempts beyond the auto-fix budget, for lost workers (heartbeat timeouts)."""
RECORD_TIMEOUT = timedelta(seconds=30)
"""Bookkeeping local activities (DB projection writes)."""
REPAIR_ACTIVITY_TIMEOUT = timedelta(minutes=15)
STEP_FAILURE_TYPES = frozenset({STEP_FAILED, *(t.value for t in FailureType)})


class StepCancelled(Exception):
    """The step's activity was cancelled (the run is being cancelled)."""


@dataclass
class Execution:
    """How one execution of a step (with its Temporal retries) ended."""

    ok: bool
    result: StepResult
    reason: str = ""
    attempts_used: int | None = None
    """Attempt numbers used, those before waits on a circuit breaker included (None: the result's
    Temporal attempts). Only the last execution's attempts spend the retry budget."""
    held_by: BreakerWait | None = None
    """Set when the step gave up waiting on a circuit breaker (past the policy's maximum)."""

    @property
    def attempts(self) -> int:
        return self.attempts_used if self.attempts_used is not None else self.result.temporal_attempts


WaitHook = Callable[[BreakerWait | None], Awaitable[None]]
"""Told when a step starts waiting on a breaker (the wait), and when it goes on (None)."""


def activity_id(index: int, step: Step, attempt_base: int) -> str:
    base = f"{index:03d}-{step.name}"
    return base if attempt_base == 0 else f"{base}-a{attempt_base + 1}"


def step_retry_policy(policy: AutofixPolicy | None, budget: int) -> RetryPolicy:
    """Temporal's retry policy for one execution of a step: without auto-fix, retries for a lost
    worker only; with it, room for ``budget`` per-class retries (the activity decides each one
    from ``policy``) plus the allowance for lost workers."""
    if policy is None:
        return STEP_INFRA_RETRY
    return RetryPolicy(initial_interval=INFRA_FIRST_RETRY, backoff_coefficient=INFRA_BACKOFF,
                       maximum_interval=timedelta(seconds=30), maximum_attempts=1 + budget + INFRA_ALLOWANCE,
                       non_retryable_error_types=[STEP_FAILED])


async def execute_step(run: RunContext, index: int, step: Step, commit: str, *,
                       attempt_base: int = 0, budget: int = 0, on_wait: WaitHook | None = None) -> Execution:
    """Run ``step`` at ``commit`` with up to ``budget`` per-class retries (the retry rung, inside
    the activity); never raises for a red step (``Execution.ok`` is False), raises
    ``StepCancelled`` when cancelled.

    A step held by an open circuit breaker (``BREAKER_OPEN``) waits here on a durable timer,
    spending no retry, and runs again when the breaker may let it; past the breaker's maximum
    wait it ends not ok with ``held_by`` set, for a person to decide."""
    first_base, waiting_since = attempt_base, None
    while True:
        ex = await _execute_once(run, index, step, commit, attempt_base=attempt_base, budget=budget)
        if ex.held_by is None:
            if waiting_since is not None and on_wait is not None:
                await on_wait(None)
            ex.attempts_used = attempt_base - first_base + ex.result.temporal_attempts
            return ex
        wait = ex.held_by
        now = workflow.now().timestamp()
        waiting_since = waiting_since if waiting_since is not None else now
        attempt_base = max(attempt_base, wait.attempt)
        if wait.until - waiting_since > wait.max_wait_seconds:
            reason = (f"step {step.name!r} waited {now - waiting_since:.0f}s on circuit breaker {wait.breaker}, "
                      f"which stays open past the {wait.max_wait_seconds:g}s a run may wait")
            result = wait.result or StepResult(exit_code=-1, duration_seconds=0.0, commit="")
            return Execution(ok=False, result=result, reason=reason, attempts_used=attempt_base - first_base,
                             held_by=wait)
        if on_wait is not None:
            await on_wait(wait)
        try:
            await workflow.sleep(max(wait.until - now, 0.1))
        except asyncio.CancelledError as err:
            raise StepCancelled() from err


async def _execute_once(run: RunContext, index: int, step: Step, commit: str, *,
                        attempt_base: int, budget: int) -> Execution:
    policy = run.autofix.policy if run.autofix else None
    inp = StepInput(run=run.ref, step_index=index, step=step, commit=commit, attempt_base=attempt_base,
                    policy=policy, retry_budget=budget if policy else 0)
    handle = workflow.start_activity(
        "run_step", inp, result_type=StepResult,
        activity_id=activity_id(index, step, attempt_base),
        task_queue=task_queue(run.task_queue_prefix, step.queue.value),
        start_to_close_timeout=timedelta(seconds=step.timeout_seconds) + CHECKOUT_MARGIN,
        heartbeat_timeout=timedelta(seconds=run.heartbeat_timeout_seconds),
        retry_policy=step_retry_policy(policy, budget),
        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        priority=temporal_priority(run.scheduling, step),
    )
    try:
        # Shielded, so that the run's cancellation is seen here rather than only through how the
        # activity then ends: a cancel that reaches no worker (its worker is dead) lets the
        # attempt end by its heartbeat timeout, which Temporal reports as a timeout, not a cancel.
        result = await asyncio.shield(handle)
    except asyncio.CancelledError as err:
        handle.cancel()  # the same request to stop the activity as an unshielded await sends
        if workflow.patched(CANCEL_ENDS_AS_CANCELLED):
            # Whatever the attempt's end now (cancelled, timed out, failed, even succeeded),
            # the run was asked to stop: the step is cancelled, and the run's end closes any
            # attempt the dead worker left open.
            with contextlib.suppress(asyncio.CancelledError, FailureError):
                await handle
            raise StepCancelled() from err
        return await _ended(step, handle)
    except (CancelledError, ActivityError) as err:
        if is_cancelled_exception(err):
            raise StepCancelled() from err
        assert isinstance(err, ActivityError)
        return _failed(step, err)
    return Execution(ok=True, result=result)


CANCEL_ENDS_AS_CANCELLED = "step-cancel-ends-as-cancelled"
"""Histories recorded before it: the activity's end after a cancel request decided the step's
(a timeout there failed the run); they replay through ``_ended``."""


async def _ended(step: Step, handle: workflow.ActivityHandle[StepResult]) -> Execution:
    """How the step ended after a cancel request, as before ``CANCEL_ENDS_AS_CANCELLED``."""
    try:
        result = await handle
    except (asyncio.CancelledError, CancelledError, ActivityError) as err:
        if is_cancelled_exception(err):
            raise StepCancelled() from err
        assert isinstance(err, ActivityError)
        return _failed(step, err)
    return Execution(ok=True, result=result)


def _failed(step: Step, err: ActivityError) -> Execution:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == BREAKER_OPEN and cause.details:
        wait = value_to_type(BreakerWait, cause.details[0])
        return Execution(ok=False, result=wait.result or StepResult(exit_code=-1, duration_seconds=0.0, commit=""),
                         reason=cause.message, held_by=wait)
    if isinstance(cause, ApplicationError) and cause.type in STEP_FAILURE_TYPES and cause.details:
        result = value_to_type(StepResult, cause.details[0])
        return Execution(ok=False, result=result, reason=cause.message)
    if isinstance(cause, ApplicationError) and cause.type in (STEP_CANNOT_START, STEP_OUTCOME_UNKNOWN):
        reason = cause.message  # names the step already
    elif isinstance(cause, TimeoutError):
        kind = cause.type.name.lower().replace("_", "-") if cause.type else "unknown"
        reason = f"step {step.name!r} did not finish: {kind} timeout"
    else:
        reason = f"step {step.name!r} could not be run: {failure_message(err)}"
    return Execution(ok=False, result=StepResult(exit_code=-1, duration_seconds=0.0, commit=""), reason=reason)


def failure_message(err: FailureError) -> str:
    """The message of the failure that caused ``err`` (an activity's or a child's), else its own."""
    return err.cause.message if isinstance(err.cause, FailureError) else err.message


def retry_events(step: str, result: StepResult, next_seq: int) -> list[AutofixEvent]:
    """Timeline entries for the Temporal retries inside one execution (read from its result)."""
    now = workflow.now()
    events: list[AutofixEvent] = []
    for record in result.retries:
        events.append(AutofixEvent(
            seq=next_seq + len(events), at=now, step=step, strategy=Strategy.RETRY, outcome=EventOutcome.RETRIED,
            signal_type=record.signal_type, confidence=record.confidence, attempt=record.attempt,
            backoff_seconds=record.backoff_seconds, fingerprint=record.fingerprint,
            evidence=[record.evidence] if record.evidence else [],
            detail=(f"waited {record.backoff_seconds:g}s" + (f" (Retry-After {record.retry_after:g}s)"
                                                             if record.retry_after else "")),
            audit="autofix.retry"))
    return events


def classified_event(step: str, result: StepResult, seq: int, outcome: EventOutcome,
                     detail: str = "") -> AutofixEvent:
    signal = result.signal
    return AutofixEvent(
        seq=seq, at=workflow.now(), step=step, strategy=Strategy.CLASSIFY, outcome=outcome,
        signal_type=signal.type if signal else None, confidence=signal.confidence if signal else None,
        attempt=result.attempt, fingerprint=signal.fingerprint if signal else None,
        evidence=[f"{e.line}: {e.text}" if e.line else e.text for e in signal.evidence] if signal else [],
        detail=detail or (signal.reason if signal else ""), commit=result.commit or None,
        audit="autofix.classified")
