"""``metabuilder queues``: each pool's task queue from Temporal: backlog (count, age of the
oldest task) and add and dispatch rates per priority, and the workers polling it."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING

from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.service.queues import Stats
    from metabuilder.worker.settings import Settings


def _line(label: str, s: Stats, pollers: str = "") -> str:
    return (f"{label:<24} {pollers:>7} {s.backlog_count:>8} {s.backlog_age_seconds:>10.1f}s "
            f"{s.add_rate:>8.2f} {s.dispatch_rate:>10.2f}")


async def cmd_queues(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service.queues import queue_stats
    from metabuilder.worker.runtime import connect

    client = await connect(settings, start_embedded=False)
    pools = await queue_stats(client, settings.task_queue_prefix)
    if args.json:
        print_json({"task_queue_prefix": settings.task_queue_prefix, "shared": True,
                    "pools": [asdict(p) for p in pools]})
        return 0
    print(f"{'pool (task queue)':<24} {'pollers':>7} {'backlog':>8} {'oldest':>11} {'added/s':>8} {'dispatch/s':>10}")
    for p in pools:
        print(_line(f"{p.pool} ({p.task_queue})", p.total, str(p.pollers)))
        for priority, s in p.by_priority.items():
            print(_line(f"  {priority}", s))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("queues", help="each pool's queue: backlog, its age, rates per priority, pollers")
    p.add_argument("--json", action="store_true", help="the figures as JSON (the API's queues section)")
    p.set_defaults(fn=cmd_queues)
