"""``GET /api/meta/v4/stats``: v4 statistics, one section per concern (``queues`` first; later
issues add theirs beside it)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from metabuilder.api.deps import ConfigDep, TemporalDep, Viewer
from metabuilder.api.errors import responses
from metabuilder.domain.run_stats import Durations, RunStats
from metabuilder.service.queues import PoolStats, Stats, queue_stats
from metabuilder.service.run_stats import MAX_WINDOW, tenant_run_stats
from metabuilder.store.db import transaction

V4 = "/api/meta/v4"
router = APIRouter(tags=["statistics"])


class FiguresOut(BaseModel):
    backlog_count: int = Field(description="Tasks waiting for a worker (approximate).")
    backlog_age_seconds: float = Field(description="How long the oldest waiting task has waited (0: none waits).")
    add_rate: float = Field(description="Tasks added per second (recent average).")
    dispatch_rate: float = Field(description="Tasks handed to workers per second (recent average).")


class PoolOut(BaseModel):
    pool: str
    task_queue: str
    kind: str = Field(description="workflow (run and repair workflow tasks) or activity (steps, repair activities).")
    pollers: int = Field(description="Workers polling the queue now.")
    total: FiguresOut
    by_priority: dict[str, FiguresOut] = Field(description="high, normal, low (key-N for another key).")


class QueuesOut(BaseModel):
    task_queue_prefix: str
    shared: bool = Field(default=True, description="The queues are the deployment's, shared by every tenant: "
                                                  "the figures count all tenants' work.")
    pools: list[PoolOut]


class DurationsOut(BaseModel):
    count: int
    mean_seconds: float | None
    p95_seconds: float | None


class FailureBucketOut(BaseModel):
    start: datetime
    by_class: dict[str, int]


class RunsOut(BaseModel):
    """The caller's tenant's runs started within the window."""

    since: datetime
    until: datetime
    total: int
    by_status: dict[str, int]
    finished: int
    success_ratio: float | None = Field(description="Succeeded over finished runs (null: none finished).")
    duration: DurationsOut = Field(description="Of the finished runs, start to end.")
    failures_by_class: dict[str, int] = Field(description="Failed attempts by the classifier's class.")
    bucket_seconds: int = Field(description="The width of each failures_over_time bucket (an hour or a day).")
    failures_over_time: list[FailureBucketOut]
    resolution_by_class: dict[str, DurationsOut] = Field(description=(
        "Time to resolution: from a step's first classified failure to the auto-fix entry (or retry) that "
        "got it past it, by that failure's class."))
    repairs_by_strategy: dict[str, int] = Field(description="Repairs that got a step past its failure: patch, "
                                                            "flake_check, replan, retry.")
    cost_usd: float = Field(description="LLM cost of the repairs (at the model catalogue's prices).")
    tokens: int
    cost_by_tenant: dict[str, float]
    cost_by_plan: dict[str, float]


class StatsOut(BaseModel):
    queues: QueuesOut
    runs: RunsOut


def _figures(s: Stats) -> FiguresOut:
    return FiguresOut(backlog_count=s.backlog_count, backlog_age_seconds=round(s.backlog_age_seconds, 3),
                      add_rate=round(s.add_rate, 3), dispatch_rate=round(s.dispatch_rate, 3))


def pool_out(p: PoolStats) -> PoolOut:
    return PoolOut(pool=p.pool, task_queue=p.task_queue, kind=p.kind, pollers=p.pollers, total=_figures(p.total),
                   by_priority={k: _figures(v) for k, v in p.by_priority.items()})


def _durations(d: Durations) -> DurationsOut:
    return DurationsOut(count=d.count, mean_seconds=d.mean_seconds, p95_seconds=d.p95_seconds)


def runs_out(s: RunStats) -> RunsOut:
    return RunsOut(
        since=s.since, until=s.until, total=s.total, by_status=s.by_status, finished=s.finished,
        success_ratio=s.success_ratio, duration=_durations(s.duration), failures_by_class=s.failures_by_class,
        bucket_seconds=s.bucket_seconds,
        failures_over_time=[FailureBucketOut(start=at, by_class=c) for at, c in s.failures_over_time],
        resolution_by_class={k: _durations(v) for k, v in s.resolution_by_class.items()},
        repairs_by_strategy=s.repairs_by_strategy, cost_usd=s.cost_usd, tokens=s.tokens,
        cost_by_tenant=s.cost_by_tenant, cost_by_plan=s.cost_by_plan)


def read_run_stats(config: ConfigDep, tenant: str, window_hours: int) -> RunStats:
    """Blocking: the tenant's run statistics over the last ``window_hours``."""
    with transaction(config.sessions) as session:
        return tenant_run_stats(session, tenant, timedelta(hours=window_hours))


WindowHours = Annotated[int, Query(ge=1, le=int(MAX_WINDOW.total_seconds() // 3600),
                                   description="The window of the runs section, in hours back from now.")]


@router.get(V4 + "/stats", responses=responses(401, 403, 422, 503))
async def get_stats(principal: Viewer, config: ConfigDep, temporal: TemporalDep, window_hours: WindowHours = 24,
                    ) -> StatsOut:
    """Queue statistics per pool and priority, from Temporal (any user of any tenant: the queues are shared),
    and the caller's tenant's run statistics over the window."""
    runs = await asyncio.to_thread(read_run_stats, config, principal.tenant, window_hours)
    pools = await queue_stats(await temporal.client(), config.task_queue_prefix)
    return StatsOut(queues=QueuesOut(task_queue_prefix=config.task_queue_prefix, pools=[pool_out(p) for p in pools]),
                    runs=runs_out(runs))
