"""Workers, their leases on step attempts, and step logs in the database (issue 16 part B)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from metabuilder.store.models import QueueLease, StepLogChunk, WorkerRow
from metabuilder.store.rows import upsert


def register_worker(session: Session, values: dict[str, Any]) -> None:
    """Write (or rewrite, after a restart under the same identity) a worker's own row."""
    upsert(session, WorkerRow, {**values, "stopped_at": None}, keys=["identity"],
           update=[k for k in (*values, "stopped_at") if k != "identity"])


def touch_worker(session: Session, identity: str, now: datetime) -> None:
    session.execute(update(WorkerRow).where(WorkerRow.identity == identity).values(last_seen_at=now))


def stop_worker(session: Session, identity: str, now: datetime) -> None:
    session.execute(update(WorkerRow).where(WorkerRow.identity == identity)
                    .values(stopped_at=now, last_seen_at=now))


def workers(session: Session, prefix: str | None = None) -> list[WorkerRow]:
    query = select(WorkerRow).order_by(WorkerRow.started_at.desc())
    if prefix is not None:
        query = query.where(WorkerRow.task_queue_prefix == prefix)
    return list(session.scalars(query))


@dataclass(frozen=True)
class AttemptKey:
    """One attempt of one step of one run: what a lease and a log belong to."""

    run_id: str
    step_index: int
    attempt: int

    def where(self, model: type[QueueLease] | type[StepLogChunk]) -> Any:
        return ((model.run_id == self.run_id) & (model.step_index == self.step_index)
                & (model.attempt == self.attempt))


def hold_lease(session: Session, key: AttemptKey, *, step_name: str, queue: str, worker: str,
               acquired_at: datetime, heartbeat_at: datetime, expires_at: datetime) -> None:
    """The attempt is held by ``worker`` (written when it starts, rewritten on its renewals)."""
    upsert(session, QueueLease,
           {"run_id": key.run_id, "step_index": key.step_index, "attempt": key.attempt, "step_name": step_name,
            "queue": queue, "worker": worker, "status": "held", "acquired_at": acquired_at,
            "last_heartbeat_at": heartbeat_at, "expires_at": expires_at},
           keys=["run_id", "step_index", "attempt"], update=["status", "worker", "last_heartbeat_at", "expires_at"])


def release_lease(session: Session, key: AttemptKey) -> None:
    """The attempt ended on its worker: nothing holds it any more."""
    session.execute(delete(QueueLease).where(key.where(QueueLease)))


def lose_lease(session: Session, key: AttemptKey) -> None:
    """A later attempt found this one's worker gone (Temporal gave the step to another worker)."""
    session.execute(update(QueueLease).where(key.where(QueueLease)).values(status="lost"))


def leases(session: Session, *, run_id: str | None = None) -> list[QueueLease]:
    query = select(QueueLease).order_by(QueueLease.acquired_at)
    if run_id is not None:
        query = query.where(QueueLease.run_id == run_id)
    return list(session.scalars(query))


def drop_leases_of_run(session: Session, run_id: str) -> None:
    session.execute(delete(QueueLease).where(QueueLease.run_id == run_id))


def add_log_chunk(session: Session, key: AttemptKey, *, seq: int, offset: int, raw_bytes: int, data: bytes,
                  final: bool, truncated: bool, now: datetime) -> None:
    """Idempotent by (attempt, seq): an attempt rewriting a chunk writes the same row."""
    upsert(session, StepLogChunk,
           {"run_id": key.run_id, "step_index": key.step_index, "attempt": key.attempt, "seq": seq,
            "offset": offset, "raw_bytes": raw_bytes, "data": data, "final": final, "truncated": truncated,
            "created_at": now},
           keys=["run_id", "step_index", "attempt", "seq"],
           update=["offset", "raw_bytes", "data", "final", "truncated"])


def log_chunks(session: Session, key: AttemptKey, *, after_seq: int = -1) -> Sequence[StepLogChunk]:
    return session.scalars(select(StepLogChunk).where(key.where(StepLogChunk), StepLogChunk.seq > after_seq)
                           .order_by(StepLogChunk.seq)).all()


def log_size(session: Session, key: AttemptKey) -> tuple[int, int]:
    """(raw, compressed) bytes of an attempt's stored log."""
    raw, stored = session.execute(select(func.coalesce(func.sum(StepLogChunk.raw_bytes), 0),
                                         func.coalesce(func.sum(func.length(StepLogChunk.data)), 0))
                                  .where(key.where(StepLogChunk))).one()
    return int(raw), int(stored)
