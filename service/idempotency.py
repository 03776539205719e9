"""``Idempotency-Key`` of run submissions: a repeat of a request gets the first answer, and the
same key with another request is refused.

The key is the client's (per tenant); the request is known by the SHA-256 of its canonical
JSON. The run id is chosen when the key is taken, so a repeat after a crash between the start
and the answer starts no second run: it finds that run (``RunExistsError``) and answers with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from metabuilder.domain.runs import new_run_id, workflow_id
from metabuilder.service.errors import BadRequest, Conflict, kind_of
from metabuilder.service.runs import RunExistsError
from metabuilder.store import v4 as rows
from metabuilder.store.db import transaction

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
IN_FLIGHT = timedelta(minutes=5)
"""How long a first request without an answer yet holds its key; after it a repeat takes over."""
RETENTION = timedelta(hours=24)
"""How long a key is kept: a repeat within it gets the first answer; after it the key is free
again and names a new request (the window payment APIs use, and longer than any client retries)."""
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


class KeyReused(BadRequest):
    """The key was used before with another request body."""


@dataclass(frozen=True)
class Answer:
    response: dict[str, Any]
    replayed: bool
    """The first request's answer, repeated (no run was started by this request)."""


def body_hash(body: object) -> str:
    """SHA-256 of a JSON-able request body, keys sorted: the same request hashes the same."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_key(key: str) -> str:
    """A usable key (1 to 255 visible ASCII characters); ``BadRequest`` naming it otherwise."""
    if not _KEY.fullmatch(key):
        raise BadRequest(f"{HEADER} {key[:40]!r}: expected 1 to {MAX_KEY_CHARS} visible ASCII characters")
    return key


async def once(sessions: sessionmaker[Session], tenant: str, key: str, digest: str,
               start: Callable[[str], Awaitable[dict[str, Any]]], *,
               adopt: Callable[[str], Awaitable[dict[str, Any] | None]],
               retention: timedelta = RETENTION) -> Answer:
    """Answer a submission under ``key``: the first time, ``start(run_id)`` runs and its answer is
    kept; a repeat with the same ``digest`` gets that answer; another digest is ``KeyReused``
    (422); a repeat while the first is still starting is a ``Conflict`` (409). ``adopt(run_id)``
    answers for a run a crashed first request started (None: it did not start). Keys older than
    ``retention`` are forgotten."""
    check_key(key)

    def claim() -> tuple[str, dict[str, Any] | None, bool]:
        """(run id, kept answer, whether this request takes over from a first one that gave up)."""
        with transaction(sessions) as session:
            run_id = new_run_id()
            row = rows.claim_key(session, tenant, key, digest, run_id, expired_before=datetime.now(UTC) - retention)
            if row is None:
                return run_id, None, False
            if row.body_hash != digest:
                raise KeyReused(f"{HEADER} {key!r} was used with another request (run {row.run_id}); "
                                "a new request needs a new key")
            if row.response is not None:
                return row.run_id, dict(row.response), False
            created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            if datetime.now(UTC) - created < IN_FLIGHT:
                raise Conflict(f"a request with {HEADER} {key!r} is still starting run {row.run_id}; "
                               "repeat it in a moment")
            row.created_at = datetime.now(UTC)  # the first request gave up: this one takes over
            return row.run_id, None, True

    run_id, kept, takeover = await asyncio.to_thread(claim)
    if kept is not None:
        return Answer(kept, replayed=True)
    try:
        response = await adopt(run_id) if takeover else None
        response = response or await start(run_id)
    except Exception as err:
        # A refusal (bad plan, bad workspace, Temporal down) started nothing: the key is free again.
        # Anything else may hide a start that went through; the key stays, and a repeat after
        # IN_FLIGHT adopts that run.
        if kind_of(err) is not None and not isinstance(err, RunExistsError):
            await asyncio.to_thread(_release, sessions, tenant, key)
        raise
    await asyncio.to_thread(_settle, sessions, tenant, key, response)
    return Answer(response, replayed=False)


async def run_started(client: Client, run_id: str) -> bool:
    """Whether the run's workflow was started (by a first request that gave up before answering)."""
    try:
        await client.get_workflow_handle(workflow_id(run_id)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


def _release(sessions: sessionmaker[Session], tenant: str, key: str) -> None:
    with transaction(sessions) as session:
        rows.release_key(session, tenant, key)


def _settle(sessions: sessionmaker[Session], tenant: str, key: str, response: dict[str, Any]) -> None:
    with transaction(sessions) as session:
        rows.settle_key(session, tenant, key, response)
