"""Workers as people see them: what each worker process reports about itself (``mb_v4_worker``),
joined with what Temporal knows (the pollers of each pool's task queue: identity, last poll), and
the step attempts they hold (``mb_v4_queue_lease``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.orm import Session, sessionmaker
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from metabuilder.domain.plans import Queue
from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue
from metabuilder.store import hosts
from metabuilder.store.db import transaction

POOL_NAMES = (WORKFLOW_QUEUE, *(q.value for q in Queue))

STALE_AFTER_SECONDS = 60.0
"""A worker that has not refreshed its row for this long (it refreshes every 15 s) and that Temporal
does not list as a poller is shown ``gone``: it died without saying so."""


@dataclass
class WorkerView:
    identity: str
    host: str
    pid: int | None
    pools: dict[str, int]
    """Pool -> slots, as the worker reported them ({} for a poller that reported nothing)."""
    version: str
    started_at: datetime | None
    last_seen_at: datetime | None
    """When the worker last refreshed its own row."""
    stopped_at: datetime | None
    last_poll_at: datetime | None
    """Temporal's last access time of this identity on any of its pools' task queues."""
    polling: list[str] = field(default_factory=list)
    """Pools whose task queue Temporal lists it polling."""
    state: str = "running"
    """``running``, ``stopped`` (it said so), ``gone`` (silent, not polling) or ``unregistered``
    (polling, but with no row of its own: an older worker or another client's)."""
    leases: int = 0
    """Step attempts it holds (held, or expired while Temporal has not yet moved them)."""


@dataclass(frozen=True)
class LeaseView:
    run_id: str
    step_index: int
    step_name: str
    attempt: int
    queue: str
    worker: str
    status: str
    """``held``, ``expired`` (held, past its expiry: Temporal is giving it to another worker) or ``lost``."""
    acquired_at: datetime
    last_heartbeat_at: datetime
    expires_at: datetime


async def pollers(client: Client, prefix: str) -> dict[str, dict[str, datetime | None]]:
    """identity -> pool -> last access time, from DescribeTaskQueue of each pool's queue
    (workflow tasks for ``workflow``, activity tasks for the step pools)."""
    async def one(pool: str) -> tuple[str, list[tuple[str, datetime | None]]]:
        kind = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if pool == "workflow"
                else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
        resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue(prefix, pool)), task_queue_type=kind))
        return pool, [(p.identity, p.last_access_time.ToDatetime(tzinfo=UTC) if p.HasField("last_access_time")
                       else None) for p in resp.pollers]

    seen: dict[str, dict[str, datetime | None]] = {}
    for pool, found in await asyncio.gather(*(one(p) for p in POOL_NAMES)):
        for identity, at in found:
            seen.setdefault(identity, {})[pool] = at
    return seen


def list_leases(session: Session, *, run_id: str | None = None, now: datetime | None = None) -> list[LeaseView]:
    now = now or datetime.now(UTC)
    out = []
    for row in hosts.leases(session, run_id=run_id):
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        status = "expired" if row.status == "held" and expires < now else row.status
        out.append(LeaseView(run_id=row.run_id, step_index=row.step_index, step_name=row.step_name,
                             attempt=row.attempt, queue=row.queue, worker=row.worker, status=status,
                             acquired_at=row.acquired_at, last_heartbeat_at=row.last_heartbeat_at, expires_at=expires))
    return out


def _aware(at: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes (of UTC), PostgreSQL aware ones."""
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def list_workers(sessions: sessionmaker[Session], client: Client | None, prefix: str,
                       *, now: datetime | None = None) -> tuple[list[WorkerView], list[LeaseView]]:
    """Every worker of the deployment (``prefix``) that reported itself or that Temporal lists
    polling, newest first, and the leases; without ``client`` (Temporal unreachable) from the
    database alone."""
    now = now or datetime.now(UTC)

    def read() -> tuple[list[WorkerView], list[LeaseView]]:
        with transaction(sessions) as session:
            rows = hosts.workers(session, prefix)
            views = [WorkerView(identity=r.identity, host=r.host, pid=r.pid, pools=dict(r.pools), version=r.version,
                                started_at=_aware(r.started_at), last_seen_at=_aware(r.last_seen_at),
                                stopped_at=_aware(r.stopped_at), last_poll_at=None,
                                state="stopped" if r.stopped_at else "running") for r in rows]
            return views, list_leases(session, now=now)

    views, leases = await asyncio.to_thread(read)
    polled = await pollers(client, prefix) if client is not None else {}
    by_id = {v.identity: v for v in views}
    for identity, pools in polled.items():
        view = by_id.get(identity)
        if view is None:
            pid, _, host = identity.partition("@")
            view = WorkerView(identity=identity, host=host or identity, pid=int(pid) if pid.isdigit() else None,
                              pools={}, version="", started_at=None, last_seen_at=None, stopped_at=None,
                              last_poll_at=None, state="unregistered")
            views.append(view)
            by_id[identity] = view
        view.polling = sorted(pools)
        times = [t for t in pools.values() if t is not None]
        view.last_poll_at = max(times) if times else None
    for view in views:
        if view.state == "running" and not view.polling and client is not None and view.last_seen_at is not None \
                and (now - view.last_seen_at).total_seconds() > STALE_AFTER_SECONDS:
            view.state = "gone"
        view.leases = sum(1 for lease in leases if lease.worker == view.identity and lease.status != "lost")
    return views, leases
