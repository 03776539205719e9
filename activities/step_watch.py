"""While a step's command runs: its lease and its log in the database, for anyone on any host.

The command writes its log to a file on the worker (no pipe through the worker: see
``Workspace.execute``). A :class:`StepWatch` follows that file and ships what it adds to the
database in zlib-compressed chunks, batched (every ``flush_seconds`` or ``flush_bytes``, never a
write per line), up to ``max_bytes`` compressed per attempt, after which one chunk says the log was
truncated and where the whole of it is. The same writes renew the attempt's lease
(``mb_v4_queue_lease``), throttled to a few per heartbeat timeout. The lease is taken in the
transaction of the attempt's ``running`` row; when the command has ended, the rest of the log,
a final mark and the lease's release go into the transaction of its final row.

All of it is best effort for people: a database that cannot be written delays the log, it does
not fail the step (Temporal's heartbeats, not these rows, decide whether the worker is alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.store import hosts
from metabuilder.store.db import transaction
from metabuilder.store.hosts import AttemptKey
from metabuilder.telemetry.spans import span

log = structlog.get_logger("metabuilder.step_watch")

READ_BYTES = 256 * 1024
"""Largest piece read from the log file at once, and so the largest chunk: it bounds memory."""


@dataclass(frozen=True)
class LogSettings:
    """Step logs in the database (``META_BUILDER_STEP_LOG_*``)."""

    enabled: bool = True
    max_bytes: int = 16 * 1024 * 1024
    """Compressed bytes stored per step attempt; later output is left out, with a marker."""
    flush_bytes: int = 64 * 1024
    flush_seconds: float = 0.5
    level: int = 6
    """zlib level."""


@dataclass(frozen=True)
class Watched:
    """What the step activity tells the watch about the attempt."""

    key: AttemptKey
    step_name: str
    queue: str
    heartbeat_timeout_seconds: float


def _now() -> datetime:
    return datetime.now(UTC)


class StepWatcher:
    """One per worker: its database, its identity, and the log settings."""

    def __init__(self, sessions: sessionmaker[Session], identity: str, settings: LogSettings) -> None:
        self.sessions = sessions
        self.identity = identity
        self.settings = settings

    def watch(self, watched: Watched, log_path: Path) -> StepWatch:
        return StepWatch(self, watched, log_path)


class StepWatch:
    """One attempt's lease and log. The step activity writes the lease with the attempt's
    ``running`` row (:meth:`hold`), and the log's end with its final row (:meth:`final`), so that
    a quick step costs no transaction of its own here; :meth:`close` does both ends alone."""

    def __init__(self, watcher: StepWatcher, watched: Watched, log_path: Path) -> None:
        self.w, self.watched, self.log_path = watcher, watched, log_path
        self.offset = 0
        """Bytes of the log file read so far."""
        self.seq = 0
        self.stored = 0
        """Compressed bytes stored so far."""
        self.truncated = False
        self.acquired = _now()
        self.renewed = 0.0
        self.held = False
        """The lease is written (by :meth:`hold`, or by the watch itself when it starts)."""
        self.started = False
        """The command started: its log's end gets a final chunk."""
        self._pending: list[_Piece] = []
        """Read and compressed at the command's end, written by :meth:`final`."""
        self._final_from: tuple[int, int, list[_Piece]] | None = None
        self._file: BinaryIO | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy: asyncio.Future[None] | None = None
        """The loop's write in its thread: a cancelled loop leaves it running, so stop waits for it."""
        timeout = watched.heartbeat_timeout_seconds
        self.renew_every = max(1.0, timeout / 3)

    def hold(self, session: Session) -> None:
        """Write the lease in the caller's transaction (the attempt's ``running`` row)."""
        self._lease(session)
        self.held = True

    def start(self) -> None:
        """Follow the log in the background, renewing the lease (taking it first unless held)."""
        self.started = True
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """The command has ended: stop following; ship the log's rest but its last batch, which
        :meth:`final` writes with the step's final row."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._busy is not None:
            with contextlib.suppress(Exception):
                await self._busy
            self._busy = None
        if not self.started:
            return
        try:
            with span("watch.stop"):
                await asyncio.to_thread(self._take_rest)
        except (SQLAlchemyError, OSError) as err:
            log.warning("step_watch.write_failed", run_id=self.watched.key.run_id, error=str(err))

    def final(self, session: Session) -> None:
        """In the caller's transaction: the last batch of the log, its final mark (when the command
        started), the lease's release. Called again (its transaction failed), it writes the same."""
        if self._final_from is None:
            self._final_from = (self.seq, self.stored, self._pending)
        self.seq, self.stored, pending = self._final_from
        if self.started:
            self._write(session, pending, last=True)
        hosts.release_lease(session, self.watched.key)

    def done(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def close(self) -> None:
        """The command has ended: the rest of the log, the final mark, the lease released, in
        transactions of the watch's own."""
        await self.stop()
        try:
            with span("watch.final_write"):
                await asyncio.to_thread(self.final_alone)
        except (SQLAlchemyError, OSError) as err:
            log.warning("step_watch.final_write_failed", run_id=self.watched.key.run_id, error=str(err))
        finally:
            self.done()

    def final_alone(self) -> None:
        with transaction(self.w.sessions) as session:
            self.final(session)

    async def _run(self) -> None:
        if not self.held:
            try:
                with span("watch.lease"):
                    await self._in_thread(self._lease)
                self.held = True
            except (SQLAlchemyError, OSError) as err:
                log.warning("step_watch.lease_failed", run_id=self.watched.key.run_id, error=str(err))
        pending_since = time.monotonic()
        first = True
        while True:
            # Held since before a slow checkout: renew at once rather than after the first pause.
            if not (first and time.monotonic() - self.renewed >= self.renew_every):
                await asyncio.sleep(self.w.settings.flush_seconds)
            first = False
            try:
                size = self.log_path.stat().st_size
            except OSError:
                continue
            due = time.monotonic() - self.renewed >= self.renew_every
            grown = size - self.offset
            if grown >= self.w.settings.flush_bytes or (grown > 0 and time.monotonic() - pending_since
                                                        >= self.w.settings.flush_seconds) or due:
                try:
                    await self._in_thread(self._flush)
                except (SQLAlchemyError, OSError) as err:
                    log.warning("step_watch.write_failed", run_id=self.watched.key.run_id, error=str(err))
                pending_since = time.monotonic()

    async def _in_thread(self, fn: Callable[[], None]) -> None:
        self._busy = asyncio.ensure_future(asyncio.to_thread(fn))
        await asyncio.shield(self._busy)
        self._busy = None

    def _lease(self, session: Session | None = None) -> None:
        if session is None:
            with transaction(self.w.sessions) as own:
                self._lease(own)
            return
        now = _now()
        hosts.hold_lease(session, self.watched.key, step_name=self.watched.step_name, queue=self.watched.queue,
                         worker=self.w.identity, acquired_at=self.acquired, heartbeat_at=now,
                         expires_at=now + timedelta(seconds=self.watched.heartbeat_timeout_seconds))
        self.renewed = time.monotonic()

    def _read(self) -> bytes:
        if self._file is None:
            try:
                self._file = self.log_path.open("rb")
            except OSError:
                return b""
        self._file.seek(self.offset)
        return self._file.read(READ_BYTES)

    def _take(self) -> list[_Piece]:
        """What the log grew by, read and compressed: at most ``BATCH`` pieces of at most
        ``READ_BYTES``, and the truncation marker once the cap is reached."""
        pieces: list[_Piece] = []
        while len(pieces) < BATCH:
            if self.truncated:  # nothing more is stored: skip to the end unread
                with contextlib.suppress(OSError):
                    self.offset = max(self.offset, self.log_path.stat().st_size)
                break
            raw = self._read()
            if not raw:
                break
            start = self.offset
            self.offset += len(raw)
            data = zlib.compress(raw, self.w.settings.level)
            room = self.w.settings.max_bytes - self.stored - sum(len(p.data) for p in (*self._pending, *pieces))
            if len(data) > room:
                self.truncated = True
                # As much of this piece as fits, then the marker.
                part = raw[:max(0, int(len(raw) * room / len(data) * 0.9))]
                packed = zlib.compress(part, self.w.settings.level)
                if part and len(packed) <= room:
                    pieces.append(_Piece(start, len(part), packed, False))
                data = zlib.compress(
                    f"\n[metabuilder] log truncated here: the database keeps at most "
                    f"{self.w.settings.max_bytes} compressed bytes of a step attempt "
                    f"(META_BUILDER_STEP_LOG_MAX_BYTES); the whole log is {self.log_path} on "
                    f"worker {self.w.identity}\n".encode())
                pieces.append(_Piece(start, 0, data, True))
                continue
            pieces.append(_Piece(start, len(raw), data, False))
        return pieces

    def _write(self, session: Session, pieces: list[_Piece], *, last: bool = False) -> None:
        now = _now()
        for piece in pieces:
            hosts.add_log_chunk(session, self.watched.key, seq=self.seq, offset=piece.offset,
                                raw_bytes=piece.raw_bytes, data=piece.data, final=False, truncated=piece.truncated,
                                now=now)
            self.seq += 1
            self.stored += len(piece.data)
        if last:
            hosts.add_log_chunk(session, self.watched.key, seq=self.seq, offset=self.offset, raw_bytes=0,
                                data=zlib.compress(b""), final=True, truncated=False, now=now)
            self.seq += 1

    def _flush(self) -> None:
        """While the command runs: ship what the log grew by (all of it, a transaction per
        ``BATCH`` pieces), renewing the lease."""
        while True:
            pieces = self._take()
            due = time.monotonic() - self.renewed >= self.renew_every
            if not (pieces or due):
                return
            with transaction(self.w.sessions) as session:
                self._write(session, pieces)
                if due:
                    self._lease(session)
            if len(pieces) < BATCH:
                return

    def _take_rest(self) -> None:
        """At the command's end: full batches go now, each in its own transaction; the last
        (usually the whole log of a quick step, or nothing) waits in ``_pending`` for :meth:`final`."""
        while True:
            pieces = self._take()
            if len(pieces) < BATCH:
                self._pending.extend(pieces)
                return
            with transaction(self.w.sessions) as session:
                self._write(session, pieces)


BATCH = 8
"""Log pieces written per transaction."""


@dataclass(frozen=True)
class _Piece:
    offset: int
    raw_bytes: int
    data: bytes
    truncated: bool
