"""Audit events of the use cases that do not otherwise open a transaction (starting, retrying
and cancelling runs, deciding gates: they talk to Temporal)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from metabuilder.store.audit import write_audit
from metabuilder.store.db import transaction


def record(sessions: sessionmaker[Session], event: str, *, tenant: str, actor: str, **fields: Any) -> None:
    """Write one audit event in a transaction of its own. Blocking."""
    with transaction(sessions) as session:
        write_audit(session, event, tenant=tenant, actor=actor, **fields)


async def audited(sessions: sessionmaker[Session], event: str, *, tenant: str, actor: str, **fields: Any) -> None:
    """:func:`record` in a thread (the request id travels with the copied context)."""
    await asyncio.to_thread(record, sessions, event, tenant=tenant, actor=actor, **fields)
