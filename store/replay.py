"""Replay bundles: a run's entries and their content-addressed blobs (a blob is stored once,
whatever number of entries and runs name it)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from metabuilder.store.models import ReplayBlob, ReplayEntry
from metabuilder.store.rows import upsert


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(session: Session, data: bytes) -> str:
    """Store ``data`` unless a blob with its sha256 is there already; its sha256."""
    digest = sha256(data)
    upsert(session, ReplayBlob, {"sha256": digest, "size": len(data), "data": data}, ["sha256"], [])
    return digest


def record_entry(session: Session, run_id: str, key: str, kind: str, step_name: str, facts: Mapping[str, Any],
                 blobs: Mapping[str, bytes]) -> bool:
    """Write one entry (its blobs first); a second write of the same (run, key) changes nothing.
    Whether it was new."""
    refs = {name: put_blob(session, data) for name, data in blobs.items()}
    return upsert(session, ReplayEntry, {"run_id": run_id, "key": key, "kind": kind, "step_name": step_name,
                                         "facts": dict(facts), "blobs": refs}, ["run_id", "key"], [])


def entries(session: Session, run_id: str) -> list[ReplayEntry]:
    return list(session.scalars(select(ReplayEntry).where(ReplayEntry.run_id == run_id).order_by(ReplayEntry.id)))


def blobs(session: Session, digests: Iterable[str]) -> dict[str, bytes]:
    wanted = sorted(set(digests))
    if not wanted:
        return {}
    return {b.sha256: b.data for b in session.scalars(select(ReplayBlob).where(ReplayBlob.sha256.in_(wanted)))}
