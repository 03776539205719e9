"""``GET /metrics`` of the API process, and the timing of its requests.

The page holds the process's own metrics (``telemetry.metrics``: requests here; the activities'
counts too when workers run in this process, as under ``metabuilder up``) and two gauges read
from the DB projection at scrape time, which are the same whichever API process is asked:
``metabuilder_runs_by_status{status}`` and ``autofix_success_ratio``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from metabuilder.api.breaker_metrics import BreakerCollector
from metabuilder.api.host_metrics import HostCollector
from metabuilder.api.queue_metrics import QueueCollector
from metabuilder.domain.runs import RunStatus
from metabuilder.store import autofix as autofix_rows
from metabuilder.store import runs as run_rows
from metabuilder.store.db import transaction
from metabuilder.store.models import utcnow
from metabuilder.telemetry.metrics import AUTOFIX_SUCCESS_RATIO, HTTP_REQUEST_SECONDS

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

QUEUE_CONNECT_TIMEOUT = 2.0
"""A scrape waits at most this long for a first connection to Temporal (then the queue gauges are absent)."""
SUCCESS_WINDOW = timedelta(hours=24)
"""``autofix_success_ratio`` is over the runs that finished in this window."""


class ProjectionCollector(Collector):
    """Gauges computed from the DB on each scrape."""

    def __init__(self, sessions: sessionmaker[Session], window: timedelta = SUCCESS_WINDOW) -> None:
        self.sessions = sessions
        self.window = window

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        runs, ratio, up = self._families()
        try:
            with transaction(self.sessions) as session:
                counts = run_rows.run_counts(session)
                outcomes = autofix_rows.autofix_outcomes(session, utcnow() - self.window)
        except Exception:  # a scrape must answer; the DB being down is itself the reading
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for status in RunStatus:
            runs.add_metric([status.value], counts.get(status.value, 0))
        finished = sum(outcomes.values())
        if finished:
            ratio.add_metric([], outcomes.get(RunStatus.SUCCEEDED.value, 0) / finished)
        yield from (runs, ratio, up)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        hours = self.window.total_seconds() / 3600
        return (
            GaugeMetricFamily("metabuilder_runs_by_status", "Runs in each status now (all tenants).",
                              labels=["status"]),
            GaugeMetricFamily(AUTOFIX_SUCCESS_RATIO,
                              f"Share of the runs finished in the last {hours:g}h in which auto-fix acted that "
                              "succeeded (absent when there were none)."),
            GaugeMetricFamily("metabuilder_projection_up", "1 when the DB projection answered this scrape."),
        )


def install(app: FastAPI, sessions: sessionmaker[Session], breaker_alert_after_seconds: float = 900.0,
            queue_prefix: str | None = None) -> None:
    """Add ``GET /metrics`` and time every request by its route template; with ``queue_prefix``,
    the queue gauges of those task queues too (asked of Temporal at each scrape), and the
    workers and step leases of that deployment."""
    projection = CollectorRegistry(auto_describe=True)
    projection.register(ProjectionCollector(sessions))
    projection.register(BreakerCollector(sessions, breaker_alert_after_seconds))
    projection.register(HostCollector(sessions, queue_prefix or "metabuilder"))
    queues = QueueCollector(queue_prefix) if queue_prefix is not None else None
    if queues is not None:
        projection.register(queues)
    scraping = asyncio.Lock()  # one scrape at a time fills and reads the queue figures

    @app.get("/metrics", tags=["health"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this process, of the DB projection and of the task queues (no token needed)."""
        async with scraping:
            if queues is not None:
                try:
                    client = await asyncio.wait_for(request.app.state.temporal.client(), QUEUE_CONNECT_TIMEOUT)
                except Exception:  # noqa: BLE001 (metabuilder_queue_stats_up 0 says it)
                    queues.latest, queues.up = [], 0
                else:
                    await queues.refresh(client)
            body = await run_in_threadpool(lambda: generate_latest(REGISTRY) + generate_latest(projection))
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(TimeRequests)


class TimeRequests:
    """ASGI middleware: every request's duration by method, route template and status class.

    A plain ASGI wrapper: ``@app.middleware("http")`` runs each request through extra tasks
    and memory streams, which cost as much as a short route itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            HTTP_REQUEST_SECONDS.labels(method, template, f"{status // 100}xx").observe(
                time.perf_counter() - started)
