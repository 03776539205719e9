"""Step logs from the database, whichever host ran the step: read whole, or followed live."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.service.errors import NotFound
from metabuilder.service.tenancy import own_run
from metabuilder.store import hosts
from metabuilder.store import steps as step_rows
from metabuilder.store.db import transaction
from metabuilder.store.hosts import AttemptKey


@dataclass(frozen=True)
class LogPiece:
    text: str
    seq: int
    """The last chunk it holds: follow from there."""
    done: bool
    """The attempt's log is complete (its final chunk was read)."""
    truncated: bool = False


def resolve_attempt(session: Session, run_id: str, step: str | None, attempt: int | None,
                    tenant: str | None) -> AttemptKey:
    """The attempt of ``step`` (a name or an index; None: the run's latest step) to read,
    ``attempt`` or the latest; ``NotFound`` naming what is missing."""
    own_run(session, run_id, tenant)
    rows = step_rows.run_steps(session, run_id)
    if not rows:
        raise NotFound(f"run {run_id} has no step attempts yet")
    if step is None:
        chosen = [r for r in rows if r.step_index == rows[-1].step_index]
    else:
        chosen = [r for r in rows if r.name == step or (step.isdigit() and r.step_index == int(step))]
        if not chosen:
            names = ", ".join(dict.fromkeys(r.name for r in rows))
            raise NotFound(f"run {run_id} has no step {step!r} (its steps so far: {names})")
    if attempt is not None:
        chosen = [r for r in chosen if r.attempt == attempt]
        if not chosen:
            raise NotFound(f"step {step or rows[-1].name!r} of run {run_id} has no attempt {attempt}")
    row = chosen[-1]
    return AttemptKey(run_id, row.step_index, row.attempt)


def read_piece(session: Session, key: AttemptKey, after_seq: int = -1) -> LogPiece:
    """The log's chunks after ``after_seq``, decompressed."""
    chunks = hosts.log_chunks(session, key, after_seq=after_seq)
    text = "".join(zlib.decompress(c.data).decode("utf-8", errors="replace") for c in chunks)
    return LogPiece(text=text, seq=chunks[-1].seq if chunks else after_seq,
                    done=any(c.final for c in chunks), truncated=any(c.truncated for c in chunks))


def attempt_open(session: Session, key: AttemptKey) -> bool:
    """Whether the attempt may still add to its log (its row says running)."""
    rows = step_rows.step_attempts(session, key.run_id, key.step_index, key.attempt, key.attempt)
    return bool(rows) and rows[0].status == "running"


def _read(sessions: sessionmaker[Session], key: AttemptKey, seq: int) -> tuple[LogPiece, bool]:
    with transaction(sessions) as session:
        return read_piece(session, key, seq), attempt_open(session, key)


async def follow(sessions: sessionmaker[Session], key: AttemptKey, *, poll_seconds: float = 0.5,
                 after_seq: int = -1) -> AsyncIterator[LogPiece]:
    """The log as it grows, until its final chunk, or until its attempt ended without one (its
    worker was lost: what it shipped before is all there is)."""
    seq = after_seq
    while True:
        piece, still_open = await asyncio.to_thread(_read, sessions, key, seq)
        if piece.text or piece.done:
            yield piece
        seq = piece.seq
        if piece.done or not still_open:
            if not piece.done:
                yield LogPiece(text="", seq=seq, done=True)
            return
        await asyncio.sleep(poll_seconds)
