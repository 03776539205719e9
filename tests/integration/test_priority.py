"""Priority and fairness on the real dev server (v4, ``domain.pools``).

Runs are submitted as users submit them (a snapshot of a git workspace, the run workflow on
the workflow pool), while no worker polls the ``cpu`` pool: their steps wait in its task queue.
Then a worker with few slots starts, and the order in which it starts the steps is read from
the runs' histories (the ``ActivityTaskStarted`` event of each step).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from metabuilder.domain.pools import PriorityClass
from metabuilder.domain.runs import WORKFLOW_QUEUE
from metabuilder.service.queues import pool_stats
from metabuilder.service.runs import SubmitOptions, Submitted, submit
from metabuilder.service.scheduling import resolve_v4
from metabuilder.worker.runtime import build_workers, running_workers
from metabuilder.worker.settings import Settings

LOW_PLAN = "name: backlog\npriority: low\nsteps:\n  - name: s\n    command: 'true'\n"
PLAN = "name: urgent\nsteps:\n  - name: s\n    command: 'true'\n"


async def submit_many(client: Client, settings: Settings, sessions, repo: Path, text: str, n: int, *,  # type: ignore[no-untyped-def]
                      tenant: str = "default", priority: PriorityClass | None = None) -> list[Submitted]:
    v4 = resolve_v4(settings.v4, sessions, tenant, run_enabled=True, priority=priority)
    opts = SubmitOptions.of(settings, tenant=tenant, v4=v4)
    gate = asyncio.Semaphore(6)  # a few at a time: the snapshots and pushes are what takes time

    async def one() -> Submitted:
        async with gate:
            return await submit(client, text, "plan.yaml", repo, opts)

    # The first alone: it creates the shared repository (two at once both try to `git init` it).
    head = [await one()]
    return head + list(await asyncio.gather(*(one() for _ in range(n - 1))))


async def wait_backlog(client: Client, settings: Settings, pool: str, count: int, timeout: float = 60) -> None:
    """Until the pool's queue holds ``count`` tasks (Temporal's approximate backlog count)."""
    async with asyncio.timeout(timeout):
        while (await pool_stats(client, settings.task_queue_prefix, pool)).total.backlog_count < count:
            await asyncio.sleep(0.2)


async def step_started(run: Submitted) -> datetime:
    """When the run's (one) step activity started, from the run's history."""
    await run.handle.result()
    history = await run.handle.fetch_history()
    started = [e.event_time.ToDatetime() for e in history.events
               if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
    assert len(started) == 1, f"run {run.run_id}: {len(started)} step starts"
    return started[0]


async def test_high_priority_steps_start_before_a_backlog_of_low_ones(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    lows_n, highs_n, slots = 50, 5, 2
    t0 = time.monotonic()
    async with running_workers(build_workers(client, settings, sessions, [WORKFLOW_QUEUE])):
        lows = await submit_many(client, settings, sessions, user_repo, LOW_PLAN, lows_n)
        await wait_backlog(client, settings, "cpu", lows_n)
        highs = await submit_many(client, settings, sessions, user_repo, PLAN, highs_n, priority=PriorityClass.HIGH)
        await wait_backlog(client, settings, "cpu", lows_n + highs_n)
        queued = await pool_stats(client, settings.task_queue_prefix, "cpu")
        print(f"\nqueued in {time.monotonic() - t0:.1f}s: {queued.total.backlog_count} steps, by priority "
              f"{ {k: v.backlog_count for k, v in queued.by_priority.items()} }")
        assert queued.by_priority["low"].backlog_count == lows_n
        assert queued.by_priority["high"].backlog_count == highs_n
        async with running_workers(build_workers(client, settings, sessions, ["cpu"], concurrency=slots)):
            async with asyncio.timeout(120):
                low_starts = await asyncio.gather(*(step_started(r) for r in lows))
                high_starts = await asyncio.gather(*(step_started(r) for r in highs))
    order = sorted([(t, "high") for t in high_starts] + [(t, "low") for t in low_starts])
    ranks = [i for i, (_, kind) in enumerate(order) if kind == "high"]
    print(f"start ranks of the {highs_n} high-priority steps among {len(order)}: {ranks}; "
          f"last high at {(max(high_starts) - min(low_starts + high_starts)).total_seconds():.2f}s, "
          f"last low at {(max(low_starts) - min(low_starts + high_starts)).total_seconds():.2f}s "
          f"(total {time.monotonic() - t0:.1f}s)")
    # The worker's first polls take the highest priority first: the 5 highs are the first 5 starts.
    assert max(ranks) < highs_n, f"high-priority steps started at ranks {ranks}"


async def test_a_tenants_flood_does_not_starve_another_tenant(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    a_n, b_n, slots = 100, 10, 2
    t0 = time.monotonic()
    async with running_workers(build_workers(client, settings, sessions, [WORKFLOW_QUEUE])):
        flood = await submit_many(client, settings, sessions, user_repo, PLAN, a_n, tenant="tenant-a")
        await wait_backlog(client, settings, "cpu", a_n)
        small = await submit_many(client, settings, sessions, user_repo, PLAN, b_n, tenant="tenant-b")
        await wait_backlog(client, settings, "cpu", a_n + b_n)
        queued = time.monotonic() - t0
        async with running_workers(build_workers(client, settings, sessions, ["cpu"], concurrency=slots)):
            async with asyncio.timeout(180):
                a_starts = await asyncio.gather(*(step_started(r) for r in flood))
                b_starts = await asyncio.gather(*(step_started(r) for r in small))
    order = sorted([(t, "a") for t in a_starts] + [(t, "b") for t in b_starts])
    b_ranks = [i for i, (_, who) in enumerate(order) if who == "b"]
    a_before_last_b = sum(1 for t in a_starts if t < max(b_starts))
    print(f"\nqueued {a_n}+{b_n} in {queued:.1f}s; tenant B's start ranks among {len(order)}: {b_ranks}; "
          f"B's last step started before A's {a_before_last_b + 1}th (total {time.monotonic() - t0:.1f}s)")
    # FIFO would start B's steps at ranks 100-109. With fairness (equal weights) the two tenants
    # take turns while both have work: B's last step starts before A's 20th or so; the bound
    # leaves room for the first tasks the matcher had loaded before B's arrived.
    assert max(b_ranks) < 2 * b_n + 20, f"tenant B's steps started at ranks {b_ranks}"


async def test_fairness_weights_share_a_pool_in_proportion(  # type: ignore[no-untyped-def]
        client: Client, settings: Settings, sessions, user_repo: Path) -> None:
    n, slots, first = 40, 2, 40
    weighted = replace(settings, v4=replace(settings.v4, fairness_weights={"tenant-b": 3.0}))
    async with running_workers(build_workers(client, settings, sessions, [WORKFLOW_QUEUE])):
        a_runs = await submit_many(client, weighted, sessions, user_repo, PLAN, n, tenant="tenant-a")
        await wait_backlog(client, settings, "cpu", n)
        b_runs = await submit_many(client, weighted, sessions, user_repo, PLAN, n, tenant="tenant-b")
        await wait_backlog(client, settings, "cpu", 2 * n)
        async with running_workers(build_workers(client, settings, sessions, ["cpu"], concurrency=slots)):
            async with asyncio.timeout(180):
                a_starts = await asyncio.gather(*(step_started(r) for r in a_runs))
                b_starts = await asyncio.gather(*(step_started(r) for r in b_runs))
    order = [who for _, who in sorted([(t, "a") for t in a_starts] + [(t, "b") for t in b_starts])]
    b_share = order[:first].count("b") / first
    print(f"\nweights A 1, B 3, {n} steps each (A's queued first): B took {b_share:.0%} of the first {first} "
          f"starts; order of the first {first}: {''.join(order[:first])}")
    # Weight 3 to 1 is a 75 % share while both have work; FIFO would give B none of the first 40.
    assert 0.6 <= b_share <= 0.9, order[:first]
