"""The worker's command runner, injected into the step and repair activities.

One object per worker: the run checkouts (``git``), where each command's log goes, the
environment a step sees, and a command's process group (run, heartbeat, time out, kill).
The activity classes receive it, as the Temporal samples' activity classes receive their
clients, so that they hold the decisions and this holds the processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from metabuilder.activities.completion import Completion
from metabuilder.activities.step_watch import StepWatch, StepWatcher, Watched
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.domain.payloads import STEP_CANNOT_START
from metabuilder.domain.sandbox import step_environment
from metabuilder.store.db import transaction
from metabuilder.telemetry.spans import span

T = TypeVar("T")

TIMEOUT_EXIT_CODE = 124
"""Exit code reported for a command killed at its timeout (as coreutils' ``timeout``)."""

LOG_TAIL_LINES = 60
LOG_TAIL_BYTES = 16_000
KILL_GRACE_SECONDS = 5.0


class Workspace:
    """Checkouts of run branches and the commands run in them, on one worker."""

    def __init__(self, artifacts_dir: Path, git: WorkspaceCache, *,
                 heartbeat_interval_seconds: float = 1.0, watcher: StepWatcher | None = None) -> None:
        self.artifacts_dir = artifacts_dir
        self.git = git
        """The run checkouts: diffs, patches, commits and pushes go through it."""
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.watcher = watcher
        """Ships a watched command's log and lease to the database while it runs (None: neither)."""

    def watch(self, watched: Watched, log_path: Path) -> StepWatch | None:
        """The lease and log shipping of one attempt (None when step logs are off)."""
        return self.watcher.watch(watched, log_path) if self.watcher else None

    def log_path(self, run_id: str, step_index: int, step_name: str, label: str) -> Path:
        return self.artifacts_dir / run_id / f"{step_index:03d}-{step_name}" / f"{label}.log"

    @staticmethod
    def step_env(step_env: dict[str, str], run_id: str, step: str, commit: str, attempt: int,
                 attempt_key: str = "") -> dict[str, str]:
        ours = {"METABUILDER_RUN_ID": run_id, "METABUILDER_STEP": step,
                "METABUILDER_COMMIT": commit, "METABUILDER_ATTEMPT": str(attempt)}
        if attempt_key:
            ours["METABUILDER_ATTEMPT_KEY"] = attempt_key
        return step_environment(os.environ, step_env, ours)

    @contextlib.asynccontextmanager
    async def checkout(self, run_id: str, repo_url: str, branch: str, commit: str) -> AsyncIterator[tuple[Path, Path]]:
        """Exclusive use of the run's checkout at ``commit``; yields (worktree, pgid file)."""
        async with self.git.lock(run_id) as pgid_file:
            try:
                yield await self.git.checkout(repo_url, run_id, branch, commit), pgid_file
            except BaseException:
                self.git.forget(run_id)
                raise

    async def execute(self, command: str, timeout: float, workdir: Path, log_path: Path,
                      pgid_file: Path, env: dict[str, str], completion: Completion | None = None,
                      watch: StepWatch | None = None) -> tuple[int, bool, str]:
        """Run the command, its output going straight to ``log_path``; return (exit code, timed
        out, tail). With ``completion``, under the wrapper that records its end durably.

        The command's process group is recorded in ``pgid_file`` while it runs, so that if this
        worker dies the next attempt on this machine kills it before touching the checkout.
        ``ApplicationError`` (``StepCannotStart``, not retryable) when it cannot be started at all.
        ``watch`` follows the log while the command runs and is stopped at its end: the caller
        writes its final part (``StepWatch.final``) with the attempt's final row."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = ["bash", "-c", command] if completion is None else completion.argv(command)
        timed_out = False
        # The command writes to the file itself, not through a pipe to this worker: if the worker
        # dies, the command is not killed by SIGPIPE on its next line of output.
        with log_path.open("wb") as log:
            try:
                with span("step.spawn"):
                    proc = await asyncio.create_subprocess_exec(
                        *argv, cwd=workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                        stderr=asyncio.subprocess.STDOUT, start_new_session=True)
            except (ValueError, OSError) as err:
                if isinstance(err, OSError) and err.errno not in _CANNOT_START:
                    raise
                why = _cannot_start(err)
                log.write(f"[metabuilder] {why}\n".encode())
                raise ApplicationError(why, type=STEP_CANNOT_START, non_retryable=True) from err
            with span("step.pgid_file"):
                pgid_file.write_text(str(proc.pid))
            heartbeat = asyncio.create_task(self._heartbeat_loop())
            if watch is not None:
                watch.start()
            try:
                try:
                    with span("step.process"):
                        await asyncio.wait_for(proc.wait(), timeout=timeout)
                except TimeoutError:
                    timed_out = True
                    await kill_group(proc)
                    log.write(f"\n[metabuilder] step timed out after {timeout:g}s; killed\n".encode())
            except asyncio.CancelledError:
                await kill_group(proc)
                raise
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                pgid_file.unlink(missing_ok=True)
                if watch is not None:
                    log.flush()
                    await asyncio.shield(watch.stop())
        code = proc.returncode if proc.returncode is not None else -1
        if timed_out:
            code = TIMEOUT_EXIT_CODE
        elif code < 0:
            code = 128 - code  # killed by a signal: the shell's convention
        with span("step.log_tail"):
            tail = read_tail(log_path)
        return code, timed_out, tail

    async def heartbeating(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` while heartbeating: a run's first checkout on a worker, or the first
        classification in a fresh worker (it compiles the knowledge base), takes seconds on a
        loaded machine, longer than a short heartbeat timeout, which would have Temporal retry
        the attempt, even a failure that must not be retried."""
        beat = asyncio.create_task(self._heartbeat_loop())
        try:
            return await awaitable
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _heartbeat_loop(self) -> None:
        # The first heartbeat waits one interval: each heartbeat is a write on the server, and a
        # quick step needs none (the activity's start already tells the server it is alive).
        while True:
            await asyncio.sleep(self.heartbeat_interval_seconds)
            activity.heartbeat()


async def write(sessions: sessionmaker[Session], fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Call ``fn(session, *args, **kwargs)`` in one transaction, off the event loop."""
    def work() -> None:
        with span(f"db.{fn.__name__}.in_thread"), transaction(sessions) as session:
            fn(session, *args, **kwargs)

    with span(f"db.{fn.__name__}"):
        await asyncio.to_thread(work)


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, then SIGKILL it if it has not gone in time."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=wait)
            return
        except TimeoutError:
            continue


_CANNOT_START = {errno.E2BIG, errno.ENOENT, errno.EACCES, errno.ENOEXEC}


def _cannot_start(err: ValueError | OSError) -> str:
    if isinstance(err, ValueError):
        return f"cannot start its command: {err} (a NUL character in the command or an env value)"
    if err.errno == errno.E2BIG:
        return ("cannot start its command: the command and its environment are too long for the "
                "system (Argument list too long; one value may be at most 128 KiB)")
    return f"cannot start its command: {err.strerror or err}"


def read_tail(log_path: Path) -> str:
    """The last lines of a log (at most ``LOG_TAIL_LINES`` and ``LOG_TAIL_BYTES``); "" if unreadable."""
    tail = _Tail()
    try:
        with log_path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 2 * LOG_TAIL_BYTES))
            tail.append(log.read())
    except OSError:
        return ""
    return tail.text()


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
