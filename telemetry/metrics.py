"""The Prometheus metrics of Meta-Builder, defined once for every process.

Rules that keep the numbers true:
- Only activities and the API touch these; workflow code never does (a replay would count again).
- Counts of events are taken where the event is first written to the DB projection (the record
  activities and ``run_step``), and only when that write is new: a retried activity, or a local
  activity run again after a lost workflow task, finds its rows there and counts nothing.
  Summed over processes, each event is counted once.
- Labels are enum values only (signal types, strategies, outcomes, statuses, queues, operations,
  route templates), never ids: the number of series stays bounded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from prometheus_client import Counter, Histogram, disable_created_metrics

# ``*_created`` timestamps would double the series for nothing Prometheus uses here.
disable_created_metrics()

BACKOFF_BUCKETS = (0.5, 1, 2, 5, 10, 15, 30, 45, 60, 90, 120, 300, 600)
"""Seconds; past the 60 s default cap so that a raised cap (or Retry-After) stays visible."""

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)

AUTOFIX_ATTEMPTS = Counter(
    "autofix_attempts_total",
    "Auto-fix timeline entries: each classification, retry, flake check, patch, re-plan, rollback "
    "and escalation, by failure class, strategy and outcome.",
    ["signal_type", "strategy", "outcome"])
AUTOFIX_BACKOFF = Histogram(
    "autofix_backoff_seconds", "Delay before each automatic retry of a failed step, by failure class.",
    ["signal_type"], buckets=BACKOFF_BUCKETS)
AUTOFIX_REPLANS = Counter(
    "autofix_replans_total", "Re-plans made by the repair ladder, by failure class.", ["signal_type"])
AUTOFIX_RUNS = Counter(
    "autofix_runs_total",
    "Finished runs in which auto-fix acted (a step failed and was classified), by final status.",
    ["status"])
APPROVAL_REQUESTS = Counter(
    "approval_requests_total",
    "Approval gates: opened (status=requested) and closed (approved, rejected, expired, cancelled).",
    ["status", "kind"])
RUN_TRANSITIONS = Counter(
    "metabuilder_runs_total", "Runs entering each status (pending, running, paused..., succeeded, failed).",
    ["status"])
BREAKER_TRANSITIONS = Counter(
    "metabuilder_circuit_breaker_transitions_total",
    "Circuit breakers changing state (to closed, open or half_open), by failure class.", ["class", "to"])
CHAOS_INJECTIONS = Counter(
    "metabuilder_chaos_injections_total", "Chaos faults injected into step attempts, by fault type.", ["type"])
CHAOS_RECOVERIES = Counter(
    "metabuilder_chaos_recoveries_total",
    "Chaos injections the step recovered from (a later attempt, or the same one for a latency, passed), by type.",
    ["type"])
CHAOS_RECOVERY_SECONDS = Histogram(
    "metabuilder_chaos_recovery_seconds", "From a chaos injection until the step passed, by fault type.",
    ["type"], buckets=DURATION_BUCKETS)
SLA_VIOLATIONS = Counter(
    "metabuilder_sla_violations_total",
    "Runs past their SLA class's deadline (its time budget), by SLA class.", ["sla"])
SLA_WARNINGS = Counter(
    "metabuilder_sla_warnings_total",
    "Runs past 80% of their SLA class's time budget, by SLA class.", ["sla"])
for _sla in ("fast", "normal", "thorough"):  # at 0 from the start: the alert's increase() sees the first one
    SLA_VIOLATIONS.labels(_sla)
    SLA_WARNINGS.labels(_sla)
CANARY_RUNS = Counter(
    "metabuilder_canary_runs_total",
    "Finished runs by the Worker Deployment version (build id) they were pinned to, and final status. "
    "The version label is bounded: the few builds deployed at once.", ["version", "outcome"])
CANARY_RUN_SECONDS = Histogram(
    "metabuilder_canary_run_seconds", "From a run's start to its end, by the version it ran on.",
    ["version"], buckets=DURATION_BUCKETS)
STEP_ATTEMPTS = Counter(
    "metabuilder_step_attempts_total", "Finished step attempts, by worker pool and status.", ["queue", "status"])
OPERATION_SECONDS = Histogram(
    "metabuilder_operation_seconds",
    "Processing time of each operation: steps, classification, fixers, patches, rollbacks, DB records.",
    ["operation"], buckets=DURATION_BUCKETS)
HTTP_REQUEST_SECONDS = Histogram(
    "metabuilder_http_request_seconds", "API requests, by method, route template and status class.",
    ["method", "route", "status"], buckets=DURATION_BUCKETS)
LLM_TOKENS = Counter(
    "metabuilder_llm_tokens_total",
    "LLM tokens metered, by model and direction (in: the prompt, out: the answer).", ["model", "direction"])
COST_USD = Counter(
    "metabuilder_cost_usd_total",
    "Money metered (LLM calls at the catalogue's prices, step CPU-seconds at the pool's price), by pool.",
    ["pool"])
BUDGET_EXCEEDED = Counter(
    "metabuilder_budget_exceeded_total",
    "Reservations refused because a run's or tenant's budget was short, by dimension.", ["dimension"])

P = ParamSpec("P")
R = TypeVar("R")

AUTOFIX_SUCCESS_RATIO = "autofix_success_ratio"
"""Served by the API from the DB (``api.metrics``): one global value, whatever the number of workers."""


@contextmanager
def timed(operation: str) -> Iterator[None]:
    """Observe the block's wall time in ``metabuilder_operation_seconds{operation}``, error or not."""
    started = time.perf_counter()
    try:
        yield
    finally:
        OPERATION_SECONDS.labels(operation).observe(time.perf_counter() - started)


def timed_async(operation: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate a coroutine function (an activity) with :func:`timed`."""

    def wrap(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            with timed(operation):
                return await fn(*args, **kwargs)

        return inner

    return wrap
