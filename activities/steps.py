"""The ``run_step`` activity: one step's command in a checkout of the run's workspace."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from metabuilder.activities.completion import Completion, Recorded, read_recorded, result_path
from metabuilder.adapters.git import GitError, WorkspaceCache
from metabuilder.adapters.llm import LlmSettings
from metabuilder.activities.llm_classifier import LlmClassifier
from metabuilder.domain.classifier import classify, failure_window
from metabuilder.domain.knowledge import KnowledgeBase
from metabuilder.domain.payloads import (
    STEP_CANNOT_START,
    STEP_FAILED,
    STEP_OUTCOME_UNKNOWN,
    RetryRecord,
    StepInput,
    StepResult,
)
from metabuilder.domain.runs import AttemptStatus, attempt_ref
from metabuilder.domain.sandbox import step_environment
from metabuilder.domain.signals import FailureSignal
from metabuilder.domain.taxonomy import FailureType
from metabuilder.store import repository
from metabuilder.store.db import transaction
from metabuilder.store.knowledge import tenant_knowledge_base
from metabuilder.telemetry import events
from metabuilder.telemetry.metrics import timed

TIMEOUT_EXIT_CODE = 124
"""Exit code reported for a command killed at its timeout (as coreutils' ``timeout``)."""

LOG_TAIL_LINES = 60
LOG_TAIL_BYTES = 16_000
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class StepSettings:
    artifacts_dir: Path
    heartbeat_interval_seconds: float = 1.0
    llm_classifier: LlmSettings | None = None
    """The endpoint to ask about failures the classifier leaves UNKNOWN (optional)."""


class StepActivities:
    """Activities that run steps. Holds the worker's checkouts and DB session factory."""

    def __init__(self, settings: StepSettings, workspaces: WorkspaceCache,
                 sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.workspaces = workspaces
        self.sessions = sessions
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.llm_classifier = LlmClassifier(settings.llm_classifier) if settings.llm_classifier else None

    def _classify(self, log_path: Path, exit_code: int, step_name: str, tenant: str) -> FailureSignal:
        """With the bundled patterns and the tenant's own (``/tenants/{id}/patterns``), read per
        failure: an entry added through the API counts from the next failed step on."""
        with transaction(self.sessions) as session:
            kb = tenant_knowledge_base(session, tenant)
        signal_ = _classify_file(log_path, exit_code, step_name, kb)
        if self.llm_classifier is not None and signal_.type is FailureType.UNKNOWN:
            with log_path.open("rb") as log:
                window = failure_window(log, kb=kb)
            signal_ = self.llm_classifier.classify(signal_, step_name, exit_code, window)
        return signal_

    @activity.defn(name="run_step")
    async def run_step(self, inp: StepInput) -> StepResult:
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
        (``StepCannotStart``). Rows are upserted by (run, step, attempt number).
        Heartbeats every second while the command runs; cancellation kills the process group.
        """
        info = activity.info()
        number = inp.attempt_base + info.attempt
        attempt = repository.StepAttempt(
            run_id=inp.run_id, step_index=inp.step_index, attempt=number, name=inp.step.name,
            queue=inp.step.queue.value, command=inp.step.command, commit_before=inp.commit,
            worker=self.worker_name,
        )
        # The "running" row is written while the checkout goes on; it is awaited before the
        # command starts and before the final write, so the two never race.
        started_row = asyncio.create_task(self.db(repository.step_started, attempt))
        log_path = self.log_path(inp.run_id, inp.step_index, inp.step.name, f"attempt-{number}")
        started = time.monotonic()
        try:
            async with self.workspaces.lock(inp.run_id) as pgid_file:
                try:
                    earlier = await self._settle_earlier(inp, number)
                    if earlier.adopt is not None:
                        await started_row
                        return await self._adopt(inp, attempt, earlier.adopt, started, info.attempt)
                    if earlier.uncertain and not inp.step.idempotent:
                        raise ApplicationError(_refusal(earlier.uncertain[-1]), type=STEP_OUTCOME_UNKNOWN,
                                               non_retryable=True)
                    workdir = await self.workspaces.checkout(inp.repo_url, inp.run_id, inp.branch, inp.commit)
                    # The row must exist before the command starts: if this worker dies while it
                    # runs, the next attempt finds it running and settles it.
                    await started_row
                    completion = Completion(
                        result_path=result_path(log_path), repo_url=inp.repo_url,
                        message=f"metabuilder: {inp.step.name} (run {inp.run_id})", commit_before=inp.commit,
                        refs=(f"refs/heads/{inp.branch}", attempt_ref(inp.run_id, inp.step_index, number)))
                    exit_code, timed_out, tail = await self.execute(
                        inp.step.command, inp.step.timeout_seconds, workdir, log_path, pgid_file,
                        self.step_env(inp.step.env, inp.run_id, inp.step.name, inp.commit, number), completion)
                    commit, changed = inp.commit, []
                    if exit_code == 0:
                        recorded = read_recorded(completion.result_path)
                        if recorded is None or not recorded.adoptable:
                            raise GitError(f"step {inp.step.name!r} exited 0 but its changes could not be "
                                           f"committed and pushed to {inp.repo_url} (see {log_path})")
                        commit = recorded.commit
                        changed = await self.workspaces.committed(inp.run_id, inp.commit, commit)
                    else:
                        self.workspaces.forget(inp.run_id)
                except BaseException:
                    self.workspaces.forget(inp.run_id)
                    raise
        except asyncio.CancelledError:
            await asyncio.gather(started_row, return_exceptions=True)
            await self._finish(attempt, AttemptStatus.CANCELLED, None, started, None, "", log_path)
            raise
        except ApplicationError as err:
            await asyncio.gather(started_row, return_exceptions=True)
            await self._finish(attempt, AttemptStatus.ERROR, None, started, None, f"[metabuilder] {err.message}\n",
                               log_path)
            raise ApplicationError(f"step {inp.step.name!r} {err.message}", type=err.type,
                                   non_retryable=err.non_retryable) from err
        except Exception as err:
            # The worker's own trouble (git, the DB): retried by Temporal, and not a lost worker.
            await asyncio.gather(started_row, return_exceptions=True)
            await self._finish(attempt, AttemptStatus.ERROR, None, started, None,
                               f"[metabuilder] the worker could not run the step: {err}\n", log_path)
            raise
        await started_row
        duration = round(time.monotonic() - started, 3)
        if exit_code == 0:
            await self._finish(attempt, AttemptStatus.SUCCEEDED, 0, started, commit, tail, log_path)
            return StepResult(exit_code=0, duration_seconds=duration, commit=commit, changed_files=changed,
                              log_tail=tail, log_path=str(log_path), attempt=number,
                              retries=await self._retries(inp, info.attempt), temporal_attempts=info.attempt)

        signal_ = await asyncio.to_thread(self._classify, log_path, exit_code, inp.step.name, inp.tenant)
        delay = _retry_delay(inp, info.attempt, signal_)
        await self._finish(attempt, AttemptStatus.FAILED, exit_code, started, None, tail, log_path,
                           repository.AttemptSignal(
                               signal_type=signal_.type.value, confidence=signal_.confidence,
                               fingerprint=signal_.fingerprint,
                               evidence=signal_.evidence[0].text if signal_.evidence else "",
                               backoff_seconds=delay, retry_after_seconds=signal_.retry_after))
        result = StepResult(exit_code=exit_code, duration_seconds=duration, commit=commit, log_tail=tail,
                            log_path=str(log_path), timed_out=timed_out, attempt=number, signal=signal_,
                            retries=await self._retries(inp, info.attempt), temporal_attempts=info.attempt)
        why = f"timed out after {inp.step.timeout_seconds:g}s" if timed_out else f"exited with {exit_code}"
        # BENIGN: a red build is an outcome the workflow handles, not a worker error to log.
        raise ApplicationError(
            f"step {inp.step.name!r} {why} ({signal_.type.value})", asdict(result),
            type=signal_.type.value if inp.policy else STEP_FAILED, non_retryable=delay is None,
            next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
            category=ApplicationErrorCategory.BENIGN)

    async def _settle_earlier(self, inp: StepInput, number: int) -> _Earlier:
        """Find how the earlier attempts of this execution that never reported ended: the latest
        one with a recorded, committed success is adopted; the others still ``running`` are closed
        as ``failed`` (a recorded non-zero exit) or ``lost`` (no record: their end is unknown, and
        uncertain if their command had started). Runs while this attempt holds the checkout, after
        what a dead worker left running on this machine was killed."""
        first = inp.attempt_base + 1
        if number == first:
            return _Earlier()
        logs = {a: self.log_path(inp.run_id, inp.step_index, inp.step.name, f"attempt-{a}")
                for a in range(first, number)}

        def work() -> _Earlier:
            recorded = {a: read_recorded(result_path(log)) for a, log in logs.items()}
            for a in sorted(logs, reverse=True):
                if (r := recorded[a]) is not None and r.adoptable:
                    return _Earlier(adopt=(a, r))
            uncertain = []
            with transaction(self.sessions) as session:
                for row in repository.step_attempts(session, inp.run_id, inp.step_index, first, number - 1):
                    if row.status != AttemptStatus.RUNNING:
                        continue
                    if (r := recorded[row.attempt]) is not None:
                        repository.close_attempt(
                            session, inp.run_id, inp.step_index, row.attempt, AttemptStatus.FAILED,
                            exit_code=r.exit_code, reason=f"[metabuilder] exited with {r.exit_code}; its worker "
                                                          "stopped before it reported\n")
                        continue
                    began = logs[row.attempt].exists()
                    repository.close_attempt(
                        session, inp.run_id, inp.step_index, row.attempt, AttemptStatus.LOST,
                        reason="[metabuilder] its worker was lost " + (
                            "while the command ran; how the command ended is unknown\n" if began
                            else "before the command started\n"))
                    if began:
                        uncertain.append(row.attempt)
            return _Earlier(uncertain=uncertain)

        return await asyncio.to_thread(work)

    async def _adopt(self, inp: StepInput, attempt: repository.StepAttempt, adopted: tuple[int, Recorded],
                     started: float, temporal_attempt: int) -> StepResult:
        """Take over the recorded success of an earlier attempt (its commit is pushed already)."""
        number, recorded = adopted
        log_path = self.log_path(inp.run_id, inp.step_index, inp.step.name, f"attempt-{number}")
        await self.workspaces.checkout(inp.repo_url, inp.run_id, inp.branch, recorded.commit)
        changed = await self.workspaces.committed(inp.run_id, inp.commit, recorded.commit)
        tail = await asyncio.to_thread(_read_tail, log_path)
        await self.db(repository.close_attempt, inp.run_id, inp.step_index, number, AttemptStatus.SUCCEEDED,
                      exit_code=0, commit_after=recorded.commit, reason=tail, log_path=str(log_path),
                      open_statuses=(AttemptStatus.RUNNING, AttemptStatus.LOST, AttemptStatus.ERROR))
        note = (f"[metabuilder] adopted the recorded result of attempt {number} (exit 0, commit "
                f"{recorded.commit[:12]}): its worker stopped after the command finished, so the command "
                "was not run again\n")
        await self._finish(attempt, AttemptStatus.ADOPTED, 0, started, recorded.commit, note, log_path)
        return StepResult(exit_code=0, duration_seconds=round(time.monotonic() - started, 3),
                          commit=recorded.commit, changed_files=changed, log_tail=tail, log_path=str(log_path),
                          attempt=number, retries=await self._retries(inp, temporal_attempt),
                          temporal_attempts=temporal_attempt)

    def log_path(self, run_id: str, step_index: int, step_name: str, label: str) -> Path:
        return self.settings.artifacts_dir / run_id / f"{step_index:03d}-{step_name}" / f"{label}.log"

    @staticmethod
    def step_env(step_env: dict[str, str], run_id: str, step: str, commit: str, attempt: int) -> dict[str, str]:
        return step_environment(os.environ, step_env, {
            "METABUILDER_RUN_ID": run_id, "METABUILDER_STEP": step,
            "METABUILDER_COMMIT": commit, "METABUILDER_ATTEMPT": str(attempt),
        })

    @contextlib.asynccontextmanager
    async def checkout(self, run_id: str, repo_url: str, branch: str, commit: str) -> AsyncIterator[tuple[Path, Path]]:
        """Exclusive use of the run's checkout at ``commit``; yields (worktree, pgid file)."""
        async with self.workspaces.lock(run_id) as pgid_file:
            try:
                yield await self.workspaces.checkout(repo_url, run_id, branch, commit), pgid_file
            except BaseException:
                self.workspaces.forget(run_id)
                raise

    async def _retries(self, inp: StepInput, temporal_attempt: int) -> list[RetryRecord]:
        """Earlier attempts of this execution that failed and were retried, from their DB rows."""
        if temporal_attempt == 1:
            return []

        def read() -> list[RetryRecord]:
            with transaction(self.sessions) as session:
                rows = repository.step_attempts(session, inp.run_id, inp.step_index, inp.attempt_base + 1,
                                                inp.attempt_base + temporal_attempt - 1)
                return [RetryRecord(attempt=r.attempt, signal_type=r.signal_type, confidence=r.confidence or 0.0,
                                    fingerprint=r.fingerprint or "", backoff_seconds=r.backoff_seconds or 0.0,
                                    retry_after=r.retry_after_seconds, evidence=r.evidence)
                        for r in rows if r.signal_type is not None]

        return await asyncio.to_thread(read)

    async def execute(self, command: str, timeout: float, workdir: Path, log_path: Path,
                      pgid_file: Path, env: dict[str, str], completion: Completion | None = None,
                      ) -> tuple[int, bool, str]:
        """Run the command, its output going straight to ``log_path``; return (exit code, timed
        out, tail). With ``completion``, under the wrapper that records its end durably.

        The command's process group is recorded in ``pgid_file`` while it runs, so that if this
        worker dies the next attempt on this machine kills it before touching the checkout.
        ``ApplicationError`` (``StepCannotStart``, not retryable) when it cannot be started at all."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = ["bash", "-c", command] if completion is None else completion.argv(command)
        timed_out = False
        # The command writes to the file itself, not through a pipe to this worker: if the worker
        # dies, the command is not killed by SIGPIPE on its next line of output.
        with log_path.open("wb") as log:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            except (ValueError, OSError) as err:
                if isinstance(err, OSError) and err.errno not in _CANNOT_START:
                    raise
                why = _cannot_start(err)
                log.write(f"[metabuilder] {why}\n".encode())
                raise ApplicationError(why, type=STEP_CANNOT_START, non_retryable=True) from err
            pgid_file.write_text(str(proc.pid))
            heartbeat = asyncio.create_task(self._heartbeat_loop())
            try:
                try:
                    await asyncio.wait_for(proc.wait(), timeout=timeout)
                except TimeoutError:
                    timed_out = True
                    await _kill_group(proc)
                    log.write(f"\n[metabuilder] step timed out after {timeout:g}s; killed\n".encode())
            except asyncio.CancelledError:
                await _kill_group(proc)
                raise
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                pgid_file.unlink(missing_ok=True)
        code = proc.returncode if proc.returncode is not None else -1
        if timed_out:
            code = TIMEOUT_EXIT_CODE
        elif code < 0:
            code = 128 - code  # killed by a signal: the shell's convention
        return code, timed_out, await asyncio.to_thread(_read_tail, log_path)

    async def _heartbeat_loop(self) -> None:
        # The first heartbeat waits one interval: each heartbeat is a write on the server, and a
        # quick step needs none (the activity's start already tells the server it is alive).
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_seconds)
            activity.heartbeat()

    async def _finish(self, attempt: repository.StepAttempt, status: AttemptStatus, exit_code: int | None,
                      started: float, commit: str | None, tail: str, log_path: Path,
                      signal_: repository.AttemptSignal | None = None) -> None:
        seconds = time.monotonic() - started
        await self.db(repository.step_finished, attempt, status=status.value, exit_code=exit_code,
                       duration_seconds=round(seconds, 3), commit_after=commit,
                       log_tail=tail, log_path=str(log_path), signal=signal_)
        # Each Temporal attempt has its own attempt number and row: counted once per attempt.
        events.step_finished(attempt.run_id, attempt.name, attempt.queue, attempt.attempt, status.value,
                             seconds=seconds, exit_code=exit_code, signal_type=signal_.signal_type if signal_ else None)

    async def db(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        def work() -> None:
            with transaction(self.sessions) as session:
                fn(session, *args, **kwargs)

        await asyncio.to_thread(work)


@dataclass(frozen=True)
class _Earlier:
    """What the earlier attempts of an execution left: a result to adopt, attempts whose end is unknown."""

    adopt: tuple[int, Recorded] | None = None
    uncertain: list[int] = field(default_factory=list)


_CANNOT_START = {errno.E2BIG, errno.ENOENT, errno.EACCES, errno.ENOEXEC}


def _cannot_start(err: ValueError | OSError) -> str:
    if isinstance(err, ValueError):
        return f"cannot start its command: {err} (a NUL character in the command or an env value)"
    if err.errno == errno.E2BIG:
        return ("cannot start its command: the command and its environment are too long for the "
                "system (Argument list too long; one value may be at most 128 KiB)")
    return f"cannot start its command: {err.strerror or err}"


def _refusal(attempt: int) -> str:
    return (f"was not run again: it is marked idempotent: false, and attempt {attempt} ended without a result "
            "(its worker was lost while the command ran), so the command may have taken effect; check what it "
            "did, then retry the run")


def _read_tail(log_path: Path) -> str:
    tail = _Tail()
    try:
        with log_path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 2 * LOG_TAIL_BYTES))
            tail.append(log.read())
    except OSError:
        return ""
    return tail.text()


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


class _Tail:
    """The last lines of a stream, bounded in bytes whatever the line lengths."""

    def __init__(self, max_lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_BYTES) -> None:
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.buf = bytearray()

    def append(self, chunk: bytes) -> None:
        self.buf += chunk
        if len(self.buf) > 4 * self.max_bytes:
            del self.buf[: len(self.buf) - 2 * self.max_bytes]

    def text(self) -> str:
        lines = bytes(self.buf).splitlines(keepends=True)[-self.max_lines:]
        return b"".join(lines)[-self.max_bytes:].decode("utf-8", errors="replace")


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, then SIGKILL it if it has not gone in time."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=wait)
            return
        except TimeoutError:
            continue
