"""Queue statistics per pool and priority, from Temporal's task-queue description with stats.

Temporal is the authority: each pool is one task queue (``<prefix>-<pool>``), and its
``DescribeTaskQueue`` with ``report_stats`` gives the approximate backlog (count and age of the
oldest task), the rates at which tasks are added and dispatched, per priority key too, and the
workers polling it. Nothing here is stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue, TaskQueueStats
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from metabuilder.domain.plans import Queue
from metabuilder.domain.pools import PRIORITY_KEYS
from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue

POOLS = (WORKFLOW_QUEUE, *(q.value for q in Queue))
_NAMES = {key: cls.value for cls, key in PRIORITY_KEYS.items()}
DEFAULT_PRIORITY_KEY = 3
"""What Temporal uses for a task without a priority key."""


@dataclass(frozen=True)
class Stats:
    """One queue's (or one priority's) figures, approximate as Temporal reports them."""

    backlog_count: int = 0
    backlog_age_seconds: float = 0.0
    """Age of the oldest task waiting (0: none waits)."""
    add_rate: float = 0.0
    """Tasks added per second (recent average)."""
    dispatch_rate: float = 0.0
    """Tasks handed to workers per second (recent average)."""


@dataclass(frozen=True)
class PoolStats:
    pool: str
    task_queue: str
    kind: str
    """``workflow`` (run and repair workflow tasks) or ``activity`` (steps and repair activities)."""
    pollers: int
    total: Stats
    by_priority: dict[str, Stats] = field(default_factory=dict)
    """``high``, ``normal``, ``low`` (or ``key-N`` for another key) -> its figures."""


def priority_name(key: int) -> str:
    """A Temporal priority key as the plan names it (0, unset, is Temporal's default: normal)."""
    return _NAMES.get(key or DEFAULT_PRIORITY_KEY, f"key-{key}")


def _stats(raw: TaskQueueStats) -> Stats:
    age = raw.approximate_backlog_age
    return Stats(backlog_count=int(raw.approximate_backlog_count),
                 backlog_age_seconds=age.seconds + age.nanos / 1e9 if raw.HasField("approximate_backlog_age") else 0.0,
                 add_rate=float(raw.tasks_add_rate), dispatch_rate=float(raw.tasks_dispatch_rate))


async def pool_stats(client: Client, prefix: str, pool: str) -> PoolStats:
    """The figures of one pool's task queue."""
    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if pool == WORKFLOW_QUEUE else \
        TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    name = task_queue(prefix, pool)
    resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=name), task_queue_type=kind, report_stats=True))
    by_priority = {priority_name(key): _stats(raw) for key, raw in sorted(resp.stats_by_priority_key.items())}
    return PoolStats(pool=pool, task_queue=name, kind="workflow" if pool == WORKFLOW_QUEUE else "activity",
                     pollers=len(resp.pollers), total=_stats(resp.stats), by_priority=by_priority)


async def queue_stats(client: Client, prefix: str, pools: tuple[str, ...] = POOLS) -> list[PoolStats]:
    """The figures of every pool's task queue, asked for at once."""
    return list(await asyncio.gather(*(pool_stats(client, prefix, p) for p in pools)))
