"""Worker and lease gauges on ``/metrics``, read from the DB at scrape time (the same from every
API process): workers by state as they report themselves, and step attempts held per pool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.service.workers import STALE_AFTER_SECONDS, list_leases
from metabuilder.store import hosts
from metabuilder.store.db import transaction


class HostCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], prefix: str) -> None:
        self.sessions, self.prefix = sessions, prefix

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        workers, leases = self._families()
        now = datetime.now(UTC)
        try:
            with transaction(self.sessions) as session:
                rows = hosts.workers(session, self.prefix)
                held = list_leases(session, now=now)
        except Exception:  # noqa: BLE001 (metabuilder_projection_up reports the DB being down)
            return
        states: Counter[str] = Counter()
        for row in rows:
            seen = row.last_seen_at if row.last_seen_at.tzinfo else row.last_seen_at.replace(tzinfo=UTC)
            states["stopped" if row.stopped_at else
                   "silent" if (now - seen).total_seconds() > STALE_AFTER_SECONDS else "running"] += 1
        for state in ("running", "silent", "stopped"):
            workers.add_metric([state], states[state])
        counts = Counter((lease.queue, lease.status) for lease in held)
        for (queue, status), n in sorted(counts.items()):
            leases.add_metric([queue, status], n)
        yield from (workers, leases)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("metabuilder_workers", "Worker processes of this deployment by their own report: "
                              "running, silent (no report for a minute: likely dead) or stopped.", labels=["state"]),
            GaugeMetricFamily("metabuilder_step_leases", "Step attempts held by workers (mb_v4_queue_lease), by "
                              "pool and status (held, expired, lost).", labels=["queue", "status"]),
        )
