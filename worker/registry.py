"""A worker process reports itself: a row in ``mb_v4_worker`` written when it starts, refreshed
every ``REFRESH_SECONDS`` while it runs, and marked stopped when it ends (a worker that dies
leaves its row; Temporal's poller list then no longer names it, and the views say ``gone``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.store import hosts
from metabuilder.store.db import transaction
from metabuilder.worker.cli.version import package_version

REFRESH_SECONDS = 15.0
log = structlog.get_logger("metabuilder.worker")


def _now() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def registered(sessions: sessionmaker[Session], identity: str, prefix: str, slots: dict[str, int],
                     grace_seconds: float) -> AsyncIterator[None]:
    """The worker's row for the duration of the block."""
    now = _now()
    values = {"identity": identity, "host": socket.gethostname(), "pid": os.getpid(), "task_queue_prefix": prefix,
              "pools": dict(slots), "version": package_version(), "grace_seconds": grace_seconds,
              "started_at": now, "last_seen_at": now}
    await asyncio.to_thread(_write, sessions, hosts.register_worker, values)
    refresher = asyncio.create_task(_refresh(sessions, identity))
    try:
        yield
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        with contextlib.suppress(SQLAlchemyError):
            await asyncio.to_thread(_write, sessions, hosts.stop_worker, identity, _now())


def _write(sessions: sessionmaker[Session], fn, *args) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        fn(session, *args)


async def _refresh(sessions: sessionmaker[Session], identity: str) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            await asyncio.to_thread(_write, sessions, hosts.touch_worker, identity, _now())
        except SQLAlchemyError as err:  # the DB is for people here: the worker goes on
            log.warning("worker.registry_refresh_failed", error=str(err))
