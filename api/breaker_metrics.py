"""Circuit-breaker gauges on ``/metrics``, read from the DB at scrape time (the same from every
API process): the worst state per class and dependency, how long it has been open, and the
operator's alert threshold (``META_V4_BREAKER_ALERT_AFTER_SECONDS``)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.store import breakers


class BreakerCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session], alert_after_seconds: float) -> None:
        self.sessions = sessions
        self.alert_after_seconds = alert_after_seconds

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        state, open_seconds, alert_after = self._families()
        alert_after.add_metric([], self.alert_after_seconds)
        yield alert_after
        try:
            readings = breakers.gauges(self.sessions, time.time())
        except Exception:  # noqa: BLE001 (metabuilder_projection_up reports the DB being down)
            return
        for (cls, dependency), (value, seconds) in sorted(readings.items()):
            state.add_metric([cls, dependency], value)
            open_seconds.add_metric([cls, dependency], round(seconds, 3))
        yield from (state, open_seconds)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("metabuilder_circuit_breaker_state",
                              "Worst circuit-breaker state over tenants: 0 closed, 1 half-open, 2 open.",
                              labels=["class", "dependency"]),
            GaugeMetricFamily("metabuilder_circuit_breaker_open_seconds",
                              "How long the longest-open breaker of the class and dependency has been open "
                              "(0: none is).", labels=["class", "dependency"]),
            GaugeMetricFamily("metabuilder_circuit_breaker_alert_after_seconds",
                              "The CircuitBreakerOpenTooLong alert's threshold "
                              "(META_V4_BREAKER_ALERT_AFTER_SECONDS)."),
        )
