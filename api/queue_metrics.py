"""Queue gauges on ``/metrics``: per pool and priority, from Temporal's task-queue description,
asked for when Prometheus scrapes (at most a few seconds; on failure only ``..._up`` 0)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from temporalio.client import Client

from metabuilder.service.queues import PoolStats, queue_stats

SCRAPE_TIMEOUT_SECONDS = 3.0
ALL = "all"
"""The ``priority`` label of a whole queue's figures."""


class QueueCollector(Collector):
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.latest: list[PoolStats] = []
        self.up = 0

    async def refresh(self, client: Client) -> None:
        """Ask Temporal for the figures the next ``collect`` serves."""
        try:
            async with asyncio.timeout(SCRAPE_TIMEOUT_SECONDS):
                self.latest, self.up = await queue_stats(client, self.prefix), 1
        except Exception:  # noqa: BLE001 (metabuilder_queue_stats_up says it; the rest of /metrics is served)
            self.latest, self.up = [], 0

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        backlog, age, added, dispatched, pollers, up = self._families()
        up.add_metric([], self.up)
        for pool in self.latest:
            pollers.add_metric([pool.pool], pool.pollers)
            for priority, s in [(ALL, pool.total), *pool.by_priority.items()]:
                labels = [pool.pool, priority]
                backlog.add_metric(labels, s.backlog_count)
                age.add_metric(labels, round(s.backlog_age_seconds, 3))
                added.add_metric(labels, round(s.add_rate, 3))
                dispatched.add_metric(labels, round(s.dispatch_rate, 3))
        yield from (backlog, age, added, dispatched, pollers, up)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        labels = ["pool", "priority"]
        return (
            GaugeMetricFamily("metabuilder_queue_backlog_tasks",
                              "Tasks waiting in the pool's task queue (priority=\"all\": the whole queue).",
                              labels=labels),
            GaugeMetricFamily("metabuilder_queue_backlog_age_seconds",
                              "How long the oldest waiting task of the pool (and priority) has waited.", labels=labels),
            GaugeMetricFamily("metabuilder_queue_add_rate", "Tasks added to the queue per second.", labels=labels),
            GaugeMetricFamily("metabuilder_queue_dispatch_rate", "Tasks handed to workers per second.",
                              labels=labels),
            GaugeMetricFamily("metabuilder_queue_pollers", "Workers polling the pool's task queue.", labels=["pool"]),
            GaugeMetricFamily("metabuilder_queue_stats_up",
                              "1 when Temporal answered this scrape's queue description."),
        )
