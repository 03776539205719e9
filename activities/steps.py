"""The ``run_step`` activity: one step's command in a checkout of the run's workspace."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.git import WorkspaceCache
from domain.payloads import STEP_FAILED, StepInput, StepResult
from domain.runs import attempt_ref
from domain.sandbox import step_environment
from store import repository
from store.db import transaction

TIMEOUT_EXIT_CODE = 124
"""Exit code reported for a command killed at its timeout (as coreutils' ``timeout``)."""

LOG_TAIL_LINES = 60
LOG_TAIL_BYTES = 16_000
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class StepSettings:
    artifacts_dir: Path
    heartbeat_interval_seconds: float = 1.0


class StepActivities:
    """Activities that run steps. Holds the worker's checkouts and DB session factory."""

    def __init__(self, settings: StepSettings, workspaces: WorkspaceCache,
                 sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.workspaces = workspaces
        self.sessions = sessions
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"

    @activity.defn(name="run_step")
    async def run_step(self, inp: StepInput) -> StepResult:
        """Run one step and return its result; a non-zero exit raises ``ApplicationError``
        of type ``StepFailed`` (non-retryable) carrying the same result as details.

        Idempotent: a retry starts again from ``inp.commit``, upserts the same attempt row
        (keyed by run, step and Temporal attempt number) and force-pushes its own commit.
        Heartbeats every second while the command runs; cancellation kills the process group.
        """
        info = activity.info()
        attempt = repository.StepAttempt(
            run_id=inp.run_id, step_index=inp.step_index, attempt=info.attempt, name=inp.step.name,
            queue=inp.step.queue.value, command=inp.step.command, commit_before=inp.commit,
            worker=self.worker_name,
        )
        # The "running" row is written while the checkout and command go on; it is awaited before
        # the final write so the two never race.
        started_row = asyncio.create_task(self._db(repository.step_started, attempt))
        log_path = (self.settings.artifacts_dir / inp.run_id
                    / f"{inp.step_index:03d}-{inp.step.name}" / f"attempt-{info.attempt}.log")
        started = time.monotonic()
        async with self.workspaces.lock(inp.run_id) as pgid_file:
            try:
                workdir = await self.workspaces.checkout(inp.repo_url, inp.run_id, inp.branch, inp.commit)
                exit_code, timed_out, tail = await self._execute(inp, workdir, log_path, pgid_file)
                commit, changed = inp.commit, []
                if exit_code == 0:
                    commit, changed = await self.workspaces.commit_changes(
                        inp.run_id, f"metabuilder: {inp.step.name} (run {inp.run_id})")
                    if changed:
                        await self.workspaces.push(inp.run_id, inp.repo_url, commit, [
                            f"refs/heads/{inp.branch}", attempt_ref(inp.run_id, inp.step_index, info.attempt)])
                else:
                    self.workspaces.forget(inp.run_id)
            except asyncio.CancelledError:
                self.workspaces.forget(inp.run_id)
                await started_row
                await self._finish(attempt, "cancelled", None, started, None, "", log_path)
                raise
            except BaseException:
                self.workspaces.forget(inp.run_id)
                await asyncio.gather(started_row, return_exceptions=True)
                raise
        await started_row
        result = StepResult(exit_code=exit_code, duration_seconds=round(time.monotonic() - started, 3),
                            commit=commit, changed_files=changed, log_tail=tail, log_path=str(log_path),
                            timed_out=timed_out, attempt=info.attempt)
        status = "succeeded" if exit_code == 0 else "failed"
        await self._finish(attempt, status, exit_code, started, commit if exit_code == 0 else None, tail, log_path)
        if exit_code != 0:
            why = f"timed out after {inp.step.timeout_seconds:g}s" if timed_out else f"exited with {exit_code}"
            # BENIGN: a red build is an outcome the workflow handles, not a worker error to log.
            raise ApplicationError(f"step {inp.step.name!r} {why}", asdict(result), type=STEP_FAILED,
                                   non_retryable=True, category=ApplicationErrorCategory.BENIGN)
        return result

    async def _execute(self, inp: StepInput, workdir: Path, log_path: Path,
                       pgid_file: Path) -> tuple[int, bool, str]:
        """Run the command, streaming output to ``log_path``; return (exit code, timed out, tail).

        The command's process group is recorded in ``pgid_file`` while it runs, so that if this
        worker dies the next attempt on this machine kills it before touching the checkout."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = step_environment(os.environ, inp.step.env, {
            "METABUILDER_RUN_ID": inp.run_id, "METABUILDER_STEP": inp.step.name,
            "METABUILDER_COMMIT": inp.commit, "METABUILDER_ATTEMPT": str(activity.info().attempt),
        })
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", inp.step.command, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        pgid_file.write_text(str(proc.pid))
        tail = _Tail()
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        timed_out = False
        try:
            with log_path.open("wb") as log:
                try:
                    await asyncio.wait_for(_pump(proc, log, tail), timeout=inp.step.timeout_seconds)
                except TimeoutError:
                    timed_out = True
                    await _kill_group(proc)
                    message = f"\n[metabuilder] step timed out after {inp.step.timeout_seconds:g}s; killed\n"
                    log.write(message.encode())
                    tail.append(message.encode())
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
        return code, timed_out, tail.text()

    async def _heartbeat_loop(self) -> None:
        # The first heartbeat waits one interval: each heartbeat is a write on the server, and a
        # quick step needs none (the activity's start already tells the server it is alive).
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_seconds)
            activity.heartbeat()

    async def _finish(self, attempt: repository.StepAttempt, status: str, exit_code: int | None,
                      started: float, commit: str | None, tail: str, log_path: Path) -> None:
        await self._db(repository.step_finished, attempt, status=status, exit_code=exit_code,
                       duration_seconds=round(time.monotonic() - started, 3), commit_after=commit,
                       log_tail=tail, log_path=str(log_path))

    async def _db(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        def work() -> None:
            with transaction(self.sessions) as session:
                fn(session, *args, **kwargs)

        await asyncio.to_thread(work)


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


async def _pump(proc: asyncio.subprocess.Process, log: BinaryIO, tail: _Tail) -> None:
    assert proc.stdout is not None
    while chunk := await proc.stdout.read(65536):
        log.write(chunk)
        tail.append(chunk)
    await proc.wait()


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
