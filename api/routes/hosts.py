"""Workers, their leases, and step logs from any host (issue 16 part B)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select

from metabuilder.api.deps import ConfigDep, TemporalDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.service import step_logs
from metabuilder.service import workers as service
from metabuilder.service.errors import Unavailable
from metabuilder.store.db import transaction
from metabuilder.store.models import BuildRun

V3, V4 = "/api/meta/v3", "/api/meta/v4"
router = APIRouter(tags=["workers"])
READ = responses(401, 403, 404, 422)


class LeaseOut(BaseModel):
    run_id: str
    step_index: int
    step: str
    attempt: int
    queue: str
    worker: str
    status: str
    acquired_at: datetime
    last_heartbeat_at: datetime
    expires_at: datetime


class WorkerOut(BaseModel):
    identity: str
    host: str
    pid: int | None
    pools: dict[str, int]
    version: str
    state: str
    started_at: datetime | None
    last_seen_at: datetime | None
    last_poll_at: datetime | None
    stopped_at: datetime | None
    polling: list[str]
    leases: int


class WorkersOut(BaseModel):
    workers: list[WorkerOut]
    leases: list[LeaseOut]
    temporal: bool
    """Whether Temporal's pollers were read (False: from the database alone)."""


def _lease_out(lease: service.LeaseView) -> LeaseOut:
    return LeaseOut(run_id=lease.run_id, step_index=lease.step_index, step=lease.step_name, attempt=lease.attempt,
                    queue=lease.queue, worker=lease.worker, status=lease.status, acquired_at=lease.acquired_at,
                    last_heartbeat_at=lease.last_heartbeat_at, expires_at=lease.expires_at)


def _own_runs(config: ConfigDep, tenant: str, run_ids: set[str]) -> set[str]:
    if not run_ids:
        return set()
    with transaction(config.sessions) as session:
        return set(session.scalars(select(BuildRun.id).where(BuildRun.id.in_(run_ids), BuildRun.tenant_id == tenant)))


@router.get(V4 + "/workers", responses=READ)
async def list_workers(principal: Viewer, config: ConfigDep, temporal: TemporalDep) -> WorkersOut:
    """The deployment's workers (their own reports and Temporal's pollers) and the step attempts they hold."""
    try:
        client = await temporal.client()
    except Unavailable:
        client = None
    views, leases = await service.list_workers(config.sessions, client, config.task_queue_prefix)
    mine = await run_in_threadpool(_own_runs, config, principal.tenant, {lease.run_id for lease in leases})
    return WorkersOut(
        workers=[WorkerOut(identity=v.identity, host=v.host, pid=v.pid, pools=v.pools, version=v.version,
                           state=v.state, started_at=v.started_at, last_seen_at=v.last_seen_at,
                           last_poll_at=v.last_poll_at, stopped_at=v.stopped_at, polling=v.polling, leases=v.leases)
                 for v in views],
        leases=[_lease_out(lease) for lease in leases if lease.run_id in mine], temporal=client is not None)


@router.get(V4 + "/leases", responses=READ)
def list_leases(principal: Viewer, config: ConfigDep, run_id: str | None = None) -> list[LeaseOut]:
    """Which worker holds which step attempt of the tenant's runs: since when, last heartbeat, expiry."""
    with transaction(config.sessions) as session:
        leases = service.list_leases(session, run_id=run_id)
    mine = _own_runs(config, principal.tenant, {lease.run_id for lease in leases})
    return [_lease_out(lease) for lease in leases if lease.run_id in mine]


@router.get(V3 + "/runs/{run_id}/steps/{step}/log", responses=READ, response_class=PlainTextResponse)
async def step_log(run_id: str, step: str, principal: Viewer, config: ConfigDep,
                   attempt: int | None = Query(None, ge=1, description="An attempt number (default: the latest)."),
                   follow: bool = Query(False, description="Stream it as server-sent events until it ends.")):
    """A step attempt's log from the database, whichever host ran it (``step``: a name or an index);
    ``follow=1`` streams it live as server-sent events (``event: end`` when it is complete)."""
    def resolve() -> step_logs.AttemptKey:
        with transaction(config.sessions) as session:
            return step_logs.resolve_attempt(session, run_id, step, attempt, principal.tenant)

    key = await run_in_threadpool(resolve)
    headers = {"X-Metabuilder-Attempt": str(key.attempt)}
    if not follow:
        def read() -> step_logs.LogPiece:
            with transaction(config.sessions) as session:
                return step_logs.read_piece(session, key)

        piece = await run_in_threadpool(read)
        headers["X-Metabuilder-Log-Complete"] = "true" if piece.done else "false"
        return PlainTextResponse(piece.text, headers=headers)
    return StreamingResponse(_events(config, key), media_type="text/event-stream",
                             headers={**headers, "Cache-Control": "no-cache"})


async def _events(config: ConfigDep, key: step_logs.AttemptKey) -> AsyncIterator[str]:
    async for piece in step_logs.follow(config.sessions, key):
        if piece.text:
            lines = piece.text.split("\n")
            yield f"id: {piece.seq}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"
        if piece.done:
            yield f"event: end\ndata: {'truncated' if piece.truncated else 'complete'}\n\n"
