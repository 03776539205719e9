"""The ``run_step`` activity: one step's command in a checkout of the run's workspace."""

from __future__ import annotations

import asyncio
import functools
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from metabuilder.activities.breakers import Breakers
from metabuilder.activities.budgets import Metering
from metabuilder.activities.chaos import Chaos
from metabuilder.activities.completion import Completion, Recorded, read_recorded, result_path
from metabuilder.activities.llm_classifier import LlmClassifier
from metabuilder.activities.notifications import Notifier
from metabuilder.activities.shapes import FirstShape, current
from metabuilder.activities.step_watch import StepWatch, Watched
from metabuilder.activities.workspace import Workspace, read_tail, write
from metabuilder.adapters.git import GitError
from metabuilder.adapters.llm import LlmSettings
from metabuilder.domain.classifier import classify, failure_window
from metabuilder.domain.knowledge import KnowledgeBase
from metabuilder.domain.notifications import NotificationEvent
from metabuilder.domain.payloads import (
    BREAKER_OPEN,
    STEP_FAILED,
    STEP_OUTCOME_UNKNOWN,
    BreakerWait,
    RetryRecord,
    StepInput,
    StepResult,
)
from metabuilder.domain.privacy import PLATFORM_DEFAULT, Privacy
from metabuilder.domain.runs import AttemptStatus, attempt_ref
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import governance, hosts, repository
from metabuilder.store.db import transaction
from metabuilder.store.hosts import AttemptKey
from metabuilder.store.knowledge import tenant_knowledge_base
from metabuilder.telemetry import events
from metabuilder.telemetry.metrics import timed
from metabuilder.telemetry.spans import SPANS, span

log = structlog.get_logger("metabuilder.steps")


class StepActivities:
    """Activities that run steps, given the worker's workspace (checkouts and command runner)
    and DB session factory, and optionally the endpoint to ask about failures the classifier
    leaves UNKNOWN."""

    def __init__(self, workspace: Workspace, sessions: sessionmaker[Session], *,
                 llm_classifier: LlmSettings | None = None, breakers: Breakers | None = None,
                 chaos: Chaos | None = None, privacy: Privacy = PLATFORM_DEFAULT,
                 metering: Metering | None = None, notifier: Notifier | None = None) -> None:
        self.workspace = workspace
        self.metering = metering
        self.notifier = notifier
        """Tells the tenant's webhooks of a circuit breaker this worker opened (None: nobody)."""
        self.sessions = sessions
        self.breakers = breakers
        self.chaos = chaos
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.llm_classifier = LlmClassifier(llm_classifier) if llm_classifier else None
        self.privacy = privacy

    async def _notify_opened(self, inp: StepInput, attempt: int) -> None:
        """Webhooks of the breakers this worker opened (by this step's failure or another's)."""
        if self.breakers is None:
            return
        opened = self.breakers.opened()  # taken even with nobody to tell: the list must not grow
        if self.notifier is None:
            return
        for transition, run_id in opened:
            key = transition.key
            opened_by = f"{inp.run.run_id}/{inp.step_index}/{attempt}" if run_id == inp.run.run_id else run_id
            await self.notifier.notify(key.tenant, NotificationEvent.BREAKER_OPENED, f"{key}@{opened_by}", run_id, {
                "run_id": run_id, "breaker": str(key), "failure_class": str(key.failure_class),
                "dependency": key.dependency, "reason": transition.reason})

    def _classify(self, log_path: Path, exit_code: int, step_name: str, tenant: str,
                  run_id: str | None = None) -> FailureSignal:
        """With the bundled patterns and the tenant's own (``/tenants/{id}/patterns``), read per
        failure: an entry added through the API counts from the next failed step on."""
        with transaction(self.sessions) as session:
            kb = tenant_knowledge_base(session, tenant)
            privacy = governance.effective(session, self.privacy, tenant, run_id) if self.llm_classifier else None
        signal_ = _classify_file(log_path, exit_code, step_name, kb)
        if self.llm_classifier is not None and signal_.type is FailureType.UNKNOWN:
            with log_path.open("rb") as log:
                window = failure_window(log, kb=kb)
            signal_ = self.llm_classifier.classify(signal_, step_name, exit_code, window, privacy=privacy)
        return signal_

    @activity.defn(name="run_step")
    async def run_step(self, inp: StepInput | FirstShape) -> StepResult:
        """Run one step and return its result. A non-zero exit is classified from the log and
        raised as ``ApplicationError`` typed by its class (``StepFailed`` without auto-fix),
        carrying the same result as details: retryable, with a per-class ``next_retry_delay``,
        when ``inp.policy`` allows another retry of that class within ``inp.retry_budget``.

        At most once per attempt, and once per step where its end is known: the command's end is
        recorded durably (see :mod:`activities.completion`) before it is reported, and a retry
        whose predecessor's worker died after the command finished adopts that result instead
        of running the command again. A predecessor that died while the command ran is ``lost``;
        the step is then run again from ``inp.commit``, unless it is not ``idempotent`` (then it
        fails, ``StepOutcomeUnknown``). A command that cannot start fails at once
        (``StepCannotStart``). Each attempt has an idempotency key, ``<run>/<step index>/<attempt>``
        (``domain.runs.attempt_key``): its row is upserted by it, and the command gets it as
        ``METABUILDER_ATTEMPT_KEY``.
        Heartbeats every second while the command runs; cancellation kills the process group.
        """
        inp = current(StepInput, inp)
        info = activity.info()
        number = inp.attempt_base + info.attempt
        with span("step.needs"):
            needs = await self._needs(inp, number)
        if needs and self.breakers is not None:
            wait = await asyncio.to_thread(self.breakers.admit, inp.run.tenant, inp.run.run_id, inp.step.name, needs)
            if wait is not None:
                raise _held(inp, wait.payload(attempt=number - 1))
        attempt = repository.StepAttempt(
            run_id=inp.run.run_id, step_index=inp.step_index, attempt=number, name=inp.step.name,
            queue=inp.step.queue.value, command=inp.step.command, commit_before=inp.commit,
            worker=self.worker_name,
        )
        log_path = self.workspace.log_path(inp.run.run_id, inp.step_index, inp.step.name, f"attempt-{number}")
        watch = self.workspace.watch(_watched(inp, number, info), log_path)
        # The "running" row (and the attempt's lease, in the same transaction) is written while the
        # lock and the checkout go on; it is awaited before the command starts and before the final
        # write, so the two never race. (A worker that dies before it lands leaves no row: the next
        # attempt settles a missing row too.)
        started_row = asyncio.create_task(write(self.sessions, running_row, attempt, watch))
        started = time.monotonic()
        try:
            async with self.workspace.git.lock(inp.run.run_id) as pgid_file:
                try:
                    with span("step.settle_earlier"):
                        earlier = await self._settle_earlier(inp, number, attempt)
                    _heartbeat_if_slow(started)
                    if earlier.adopt is not None:
                        await started_row
                        return await self._adopt(inp, attempt, earlier.adopt, started, info.attempt, watch)
                    if earlier.uncertain and not inp.step.idempotent:
                        raise ApplicationError(_refusal(earlier.uncertain[-1]), type=STEP_OUTCOME_UNKNOWN,
                                               non_retryable=True)
                    with span("step.checkout"):
                        workdir = await self.workspace.heartbeating(self.workspace.git.checkout(
                            inp.run.repo_url, inp.run.run_id, inp.run.branch, inp.commit))
                    _heartbeat_if_slow(started)
                    # The row must exist before the command starts: if this worker dies while it
                    # runs, the next attempt (or the run's end) finds it running and settles it.
                    with span("step.await_running_row"):
                        await started_row
                    completion = Completion(
                        result_path=result_path(log_path), repo_url=inp.run.repo_url,
                        message=f"metabuilder: {inp.step.name} (run {inp.run.run_id})", commit_before=inp.commit,
                        refs=(f"refs/heads/{inp.run.branch}", attempt_ref(inp.run.run_id, inp.step_index, number)))
                    # Chaos (off unless enabled): the attempt's real process makes the fault.
                    with span("step.chaos"):
                        command = inp.step.command if self.chaos is None else await self.chaos.command(inp, number)
                    exit_code, timed_out, tail = await self.workspace.execute(
                        command, inp.step.timeout_seconds, workdir, log_path, pgid_file,
                        Workspace.step_env(inp.step.env, inp.run.run_id, inp.step.name, inp.commit, number,
                                           attempt.idempotency_key), completion, watch)
                    commit, changed, recorded = inp.commit, [], None
                    if exit_code == 0:
                        with span("step.read_result"):
                            recorded = read_recorded(completion.result_path)
                        if recorded is None or not recorded.adoptable:
                            raise GitError(f"step {inp.step.name!r} exited 0 but its changes could not be "
                                           f"committed and pushed to {inp.run.repo_url} (see {log_path})")
                        _wrapper_spans(recorded)
                        commit = recorded.commit
                        with span("step.committed"):
                            changed = await self.workspace.git.committed(inp.run.run_id, inp.commit, commit)
                    else:
                        self.workspace.git.forget(inp.run.run_id)
                except BaseException:
                    self.workspace.git.forget(inp.run.run_id)
                    raise
        except asyncio.CancelledError:
            await asyncio.gather(started_row, return_exceptions=True)
            await self._finish(attempt, AttemptStatus.CANCELLED, None, started, None, "", log_path, watch=watch)
            raise
        except ApplicationError as err:
            await asyncio.gather(started_row, return_exceptions=True)
            await self._finish(attempt, AttemptStatus.ERROR, None, started, None, f"[metabuilder] {err.message}\n",
                               log_path, watch=watch)
            raise ApplicationError(f"step {inp.step.name!r} {err.message}", type=err.type,
                                   non_retryable=err.non_retryable) from err
        except Exception as err:
            # The worker's own trouble (git, the DB): retried by Temporal, and not a lost worker.
            await asyncio.gather(started_row, return_exceptions=True)
            await self._finish(attempt, AttemptStatus.ERROR, None, started, None,
                               f"[metabuilder] the worker could not run the step: {err}\n", log_path, watch=watch)
            raise
        await started_row
        duration = round(time.monotonic() - started, 3)
        meter = self._meter(inp, attempt, duration, log_path, recorded)
        if exit_code == 0:
            result = StepResult(exit_code=0, duration_seconds=duration, commit=commit, changed_files=changed,
                                log_tail=tail, log_path=str(log_path), attempt=number, temporal_attempts=info.attempt)
            await self._finish(attempt, AttemptStatus.SUCCEEDED, 0, started, commit, tail, log_path, watch=watch,
                               also=self._succeeded(inp, info.attempt, result), meter=meter)
            if needs and self.breakers is not None:
                with span("step.breakers_passed"):
                    await asyncio.to_thread(self.breakers.passed, inp.run.tenant, inp.run.run_id, needs)
            return replace(result, retries=await self._retries(inp, info.attempt))

        signal_ = await self.workspace.heartbeating(
            asyncio.to_thread(self._classify, log_path, exit_code, inp.step.name, inp.run.tenant,
                              inp.run.run_id))
        delay = _retry_delay(inp, info.attempt, signal_)
        await self._finish(attempt, AttemptStatus.FAILED, exit_code, started, None, tail, log_path,
                           signal_=repository.AttemptSignal(
                               signal_type=signal_.type.value, confidence=signal_.confidence,
                               fingerprint=signal_.fingerprint,
                               evidence=signal_.evidence[0].text if signal_.evidence else "",
                               backoff_seconds=delay, retry_after_seconds=signal_.retry_after), watch=watch,
                           meter=meter)
        result = StepResult(exit_code=exit_code, duration_seconds=duration, commit=commit, log_tail=tail,
                            log_path=str(log_path), timed_out=timed_out, attempt=number, signal=signal_,
                            retries=await self._retries(inp, info.attempt), temporal_attempts=info.attempt)
        if self.breakers is not None:
            held = await asyncio.to_thread(self.breakers.failed, inp.run.tenant, inp.run.run_id, inp.step.name,
                                           signal_, [*inp.step.needs, *needs])
            await self._notify_opened(inp, number)
            if held is not None:
                raise _held(inp, held.payload(attempt=number, result=result))
        why = f"timed out after {inp.step.timeout_seconds:g}s" if timed_out else f"exited with {exit_code}"
        # BENIGN: a red build is an outcome the workflow handles, not a worker error to log.
        raise ApplicationError(
            f"step {inp.step.name!r} {why} ({signal_.type.value})", asdict(result),
            type=signal_.type.value if inp.policy else STEP_FAILED, non_retryable=delay is None,
            next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
            category=ApplicationErrorCategory.BENIGN)

    def _meter(self, inp: StepInput, attempt: repository.StepAttempt, seconds: float, log_path: Path,
               recorded: Recorded | None) -> Write | None:
        """The attempt's wall time and its command's CPU time (and their cost) on the run's and
        tenant's budgets, once per attempt (keyed by the attempt's idempotency key): a part of the
        attempt's final row (None without metering). ``recorded``: the result file, when a pass
        read it already (a failed command's is read here)."""
        if self.metering is None:
            return None
        metering = self.metering

        def part(session: Session) -> bool:
            result = recorded if recorded is not None else read_recorded(result_path(log_path))
            return metering.step(
                session, key=f"{attempt.idempotency_key}/step", run_id=inp.run.run_id, tenant=inp.run.tenant,
                step=inp.step.name, pool=inp.step.queue.value, wall_seconds=seconds,
                cpu_seconds=result.cpu_seconds if result else 0.0)
        return part

    async def _needs(self, inp: StepInput, number: int) -> list[str]:
        """What the step depends on, for its breakers: its ``needs:``, and after an earlier attempt
        (a retry, or a run again after a wait) what those attempts' failures named and what the
        run waited on; and, while the tenant has a breaker open, what runs of the same plan wait on
        at this step (a first attempt that declares nothing costs no query when all are closed)."""
        if self.breakers is None or not self.breakers.settings.enabled:
            return []
        if number == 1 and self.breakers.known_closed(inp.run.tenant):  # no query, so no thread
            return list(dict.fromkeys(inp.step.needs))

        def read() -> list[str]:
            assert self.breakers is not None
            evidence: list[str] = []
            if number > 1:
                with transaction(self.sessions) as session:
                    evidence = [r.evidence for r in repository.step_attempts(session, inp.run.run_id,
                                                                             inp.step_index, 1, number - 1)
                                if r.evidence]
            return self.breakers.needs(inp.run.run_id, inp.step.needs, evidence, tenant=inp.run.tenant,
                                       step_name=inp.step.name)

        return await asyncio.to_thread(read)

    async def _settle_earlier(self, inp: StepInput, number: int, this: repository.StepAttempt) -> _Earlier:
        """Find how the earlier attempts of this execution that never reported ended: the latest
        one with a recorded, committed success is adopted; the others still ``running`` (or with no
        row at all: their worker died before it was written) are closed as ``failed`` (a recorded
        non-zero exit) or ``lost`` (no record: their end is unknown, and uncertain if their
        command had started, i.e. its log exists). Runs while this attempt holds the checkout,
        after what a dead worker left running on this machine was killed."""
        first = inp.attempt_base + 1
        if number == first:
            return _Earlier()
        logs = {a: self.workspace.log_path(inp.run.run_id, inp.step_index, inp.step.name, f"attempt-{a}")
                for a in range(first, number)}

        def work() -> _Earlier:
            recorded = {a: read_recorded(result_path(log)) for a, log in logs.items()}
            uncertain: list[int] = []
            with transaction(self.sessions) as session:
                found = repository.step_attempts(session, inp.run.run_id, inp.step_index, first, number - 1)
                rows = {row.attempt: row.status for row in found}
                elsewhere = {row.attempt: host for row in found if (host := _other_host(row.worker))}
                # Settled before (by an attempt that then itself went missing, e.g. timed out while
                # refusing): a lost attempt whose command may have run stays uncertain.
                uncertain.extend(row.attempt for row in found if row.status == AttemptStatus.LOST
                                 and not (row.log_tail or "").endswith(NEVER_STARTED))
                for a in range(first, number):
                    if a not in rows:
                        repository.step_started(session, replace(this, attempt=a, worker="(unknown)"))
                        rows[a] = AttemptStatus.RUNNING
                for a in sorted(logs, reverse=True):
                    if (r := recorded[a]) is not None and r.adoptable:
                        return _Earlier(adopt=(a, r))
                for a in range(first, number):
                    if rows[a] != AttemptStatus.RUNNING:
                        continue
                    if (r := recorded[a]) is not None:
                        repository.close_attempt(
                            session, inp.run.run_id, inp.step_index, a, AttemptStatus.FAILED,
                            exit_code=r.exit_code, reason=f"[metabuilder] exited with {r.exit_code}; its worker "
                                                          "stopped before it reported\n")
                        continue
                    # Its log and result are on the machine it ran on: from another one, whether
                    # its command started is unknown, which counts as started (the safe side).
                    began = logs[a].exists() or a in elsewhere
                    hosts.lose_lease(session, AttemptKey(inp.run.run_id, inp.step_index, a))
                    repository.close_attempt(
                        session, inp.run.run_id, inp.step_index, a, AttemptStatus.LOST,
                        reason="[metabuilder] its worker was lost " + (
                            f"on {elsewhere[a]}; whether and how its command ran there is unknown\n"
                            if a in elsewhere and not logs[a].exists()
                            else "while the command ran; how the command ended is unknown\n" if began
                            else NEVER_STARTED))
                    if began:
                        uncertain.append(a)
            return _Earlier(uncertain=sorted(set(uncertain)))

        return await asyncio.to_thread(work)

    async def _adopt(self, inp: StepInput, attempt: repository.StepAttempt, adopted: tuple[int, Recorded],
                     started: float, temporal_attempt: int, watch: StepWatch | None) -> StepResult:
        """Take over the recorded success of an earlier attempt (its commit is pushed already)."""
        number, recorded = adopted
        log_path = self.workspace.log_path(inp.run.run_id, inp.step_index, inp.step.name, f"attempt-{number}")
        await self.workspace.git.checkout(inp.run.repo_url, inp.run.run_id, inp.run.branch, recorded.commit)
        changed = await self.workspace.git.committed(inp.run.run_id, inp.commit, recorded.commit)
        tail = read_tail(log_path)
        await write(self.sessions, repository.close_attempt, inp.run.run_id, inp.step_index, number,
                    AttemptStatus.SUCCEEDED, exit_code=0, commit_after=recorded.commit, reason=tail,
                    log_path=str(log_path),
                    open_statuses=(AttemptStatus.RUNNING, AttemptStatus.LOST, AttemptStatus.ERROR))
        note = (f"[metabuilder] adopted the recorded result of attempt {number} (exit 0, commit "
                f"{recorded.commit[:12]}): its worker stopped after the command finished, so the command "
                "was not run again\n")
        await self._finish(attempt, AttemptStatus.ADOPTED, 0, started, recorded.commit, note, log_path, watch=watch)
        return StepResult(exit_code=0, duration_seconds=round(time.monotonic() - started, 3),
                          commit=recorded.commit, changed_files=changed, log_tail=tail, log_path=str(log_path),
                          attempt=number, retries=await self._retries(inp, temporal_attempt),
                          temporal_attempts=temporal_attempt)

    async def _retries(self, inp: StepInput, temporal_attempt: int) -> list[RetryRecord]:
        """Earlier attempts of this execution that failed and were retried, from their DB rows."""
        if temporal_attempt == 1:
            return []

        def read() -> list[RetryRecord]:
            with transaction(self.sessions) as session:
                rows = repository.step_attempts(session, inp.run.run_id, inp.step_index, inp.attempt_base + 1,
                                                inp.attempt_base + temporal_attempt - 1)
                return [RetryRecord(attempt=r.attempt, signal_type=FailureType(r.signal_type),
                                    confidence=r.confidence or 0.0, fingerprint=r.fingerprint or "",
                                    backoff_seconds=r.backoff_seconds or 0.0, retry_after=r.retry_after_seconds,
                                    evidence=r.evidence)
                        for r in rows if r.signal_type is not None]

        return await asyncio.to_thread(read)

    def _succeeded(self, inp: StepInput, temporal_attempt: int, result: StepResult) -> Write | None:
        """What else to write with a succeeded attempt's final row, in its transaction (the
        replay bundle's entry: :mod:`activities.replay`); None here."""
        return None

    async def _finish(self, attempt: repository.StepAttempt, status: AttemptStatus, exit_code: int | None,
                      started: float, commit: str | None, tail: str, log_path: Path, *,
                      signal_: repository.AttemptSignal | None = None, watch: StepWatch | None = None,
                      also: Write | None = None, meter: Write | None = None) -> None:
        """The attempt's final row, with the end of its log and its lease's release (``watch``),
        ``also``, its metering (``meter``), and after a pass the chaos injections it recovered from,
        in the same transaction:
        one write per step's end. Those are best effort: if the transaction fails, the row is
        written alone, then each of them in its own transaction."""
        seconds = time.monotonic() - started
        final = functools.partial(repository.step_finished, a=attempt, status=status.value, exit_code=exit_code,
                                  duration_seconds=round(seconds, 3), commit_after=commit,
                                  log_tail=tail, log_path=str(log_path), signal=signal_)
        recovery = None
        if self.chaos is not None and status in (AttemptStatus.SUCCEEDED, AttemptStatus.ADOPTED):
            recovery = self.chaos.recovery(attempt.run_id, attempt.name, attempt.attempt)
        extra = [w for w in (also, watch.final if watch is not None else None, recovery, meter) if w is not None]
        try:
            await write(self.sessions, final_row, final, extra)
        except Exception as err:
            if not extra:
                raise
            log.warning("step.final_write_failed", run_id=attempt.run_id, step=attempt.name, error=str(err))
            await write(self.sessions, final_row, final, [])
            for part in extra:
                try:
                    await write(self.sessions, final_row, part, [])
                except Exception as again:  # the log's end, a bundle entry: never a reason to fail the step
                    log.warning("step.final_write_failed", run_id=attempt.run_id, step=attempt.name, error=str(again))
        finally:
            if watch is not None:
                watch.done()
        if recovery is not None:
            recovery.count()
        # Each Temporal attempt has its own attempt number and row: counted once per attempt.
        with span("step.events"):
            events.step_finished(attempt.run_id, attempt.name, attempt.queue, attempt.attempt, status.value,
                                 seconds=seconds, exit_code=exit_code,
                                 signal_type=signal_.signal_type if signal_ else None)


Write = Callable[[Session], object]
"""A part of a transaction."""


def running_row(session: Session, attempt: repository.StepAttempt, watch: StepWatch | None) -> None:
    """The attempt is running (and, with step logs on, held: its lease)."""
    repository.step_started(session, attempt)
    if watch is not None:
        watch.hold(session)


def final_row(session: Session, final: Write, extra: list[Write]) -> None:
    """The attempt's end: what goes with its final row first (a bundle entry reads its log file
    before its first write), the row last."""
    for part in extra:
        part(session)
    final(session)


def _heartbeat_if_slow(started: float) -> None:
    """Settling earlier attempts and the checkout (a fetch from a remote repository) may outlast a
    short heartbeat timeout before the command's own heartbeats begin; a quick start sends none
    (each heartbeat is a write on the server)."""
    if time.monotonic() - started > 1.0:
        activity.heartbeat()


NEVER_STARTED = "before the command started\n"
"""How a lost attempt's reason ends when its command is known not to have started."""


def _watched(inp: StepInput, number: int, info: activity.Info) -> Watched:
    timeout = info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else 10.0
    return Watched(AttemptKey(inp.run.run_id, inp.step_index, number), inp.step.name, inp.step.queue.value, timeout)


def _other_host(worker: str) -> str | None:
    """The host of an attempt's worker (``host:pid``) when it is not this machine, else None."""
    host = worker.rpartition(":")[0]
    return host if host and host != socket.gethostname() else None


def _wrapper_spans(recorded: Recorded) -> None:
    """The wrapper's own clock: the command, then its commit/push bookkeeping (``git status``)."""
    if len(recorded.times) == 3:
        start, ran, done = recorded.times
        SPANS.add("wrapper.command", ran - start)
        SPANS.add("wrapper.git_status_commit_push", done - ran)


@dataclass(frozen=True)
class _Earlier:
    """What the earlier attempts of an execution left: a result to adopt, attempts whose end is unknown."""

    adopt: tuple[int, Recorded] | None = None
    uncertain: list[int] = field(default_factory=list)


def _refusal(attempt: int) -> str:
    return (f"was not run again: it is marked idempotent: false, and attempt {attempt} ended without a result "
            "(its worker was lost while the command ran), so the command may have taken effect; check what it "
            "did, then retry the run")


def _classify_file(log_path: Path, exit_code: int, step_name: str,
                   kb: KnowledgeBase | None = None) -> FailureSignal:
    with timed("classify"), log_path.open("rb") as log:
        return classify(log, exit_code=exit_code, step_name=step_name, kb=kb)


def _retry_delay(inp: StepInput, temporal_attempt: int, signal_: FailureSignal) -> float | None:
    """Seconds before Temporal retries this execution, or None when it must not be retried:
    no auto-fix, the class allows no more retries, or the run's budget for the step is spent."""
    if inp.policy is None:
        return None
    retries_done = temporal_attempt - 1
    if retries_done >= min(inp.policy.retries_for(signal_.type), inp.retry_budget):
        return None
    return inp.policy.delay(signal_.type, temporal_attempt, retry_after=signal_.retry_after,
                            random_unit=random.random())


def _held(inp: StepInput, wait: BreakerWait) -> ApplicationError:
    """The error that tells the workflow a circuit breaker holds the step: not retryable, so the
    wait spends no Temporal attempt; the workflow sleeps until ``wait.until`` and runs it again."""
    return ApplicationError(
        f"step {inp.step.name!r} waits: circuit breaker {wait.breaker} is open", asdict(wait), type=BREAKER_OPEN,
        non_retryable=True, category=ApplicationErrorCategory.BENIGN)
