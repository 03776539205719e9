"""Run statistics over a window (the ``runs`` section of ``GET /api/meta/v4/stats`` and the portal's
Stats page): runs by status, the success ratio, run durations, failures by class over time, time
to resolution by class, repairs by strategy, and LLM cost. Pure: the facts come from the caller."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from metabuilder.domain.chaos import percentile
from metabuilder.domain.runs import RunStatus

RESOLVING = {"fixed": "patch", "flaky": "flake_check", "replanned": "replan"}
"""Auto-fix outcomes that got a step past its failure, and the rung each is."""


@dataclass(frozen=True)
class RunFact:
    run_id: str
    status: str
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class FailureFact:
    """A failed attempt the classifier named."""

    failure_class: str
    at: datetime


@dataclass(frozen=True)
class AutofixFact:
    run_id: str
    step: str
    strategy: str
    outcome: str
    signal_type: str | None
    at: datetime


@dataclass(frozen=True)
class CostFact:
    tenant: str
    plan: str
    cost_usd: float
    tokens: int


@dataclass(frozen=True)
class Durations:
    count: int
    mean_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class RunStats:
    since: datetime
    until: datetime
    bucket_seconds: int
    """The width of each bucket of ``failures_over_time``."""
    total: int
    by_status: dict[str, int]
    finished: int
    success_ratio: float | None
    """Succeeded runs over finished ones (None: none finished)."""
    duration: Durations
    """Of the finished runs, from start to end."""
    failures_by_class: dict[str, int]
    failures_over_time: list[tuple[datetime, dict[str, int]]]
    """(bucket start, failures by class), oldest first, every bucket of the window."""
    resolution_by_class: dict[str, Durations]
    """From a step's first classified failure to the auto-fix entry that got it past it."""
    repairs_by_strategy: dict[str, int]
    cost_usd: float
    tokens: int
    cost_by_tenant: dict[str, float] = field(default_factory=dict)
    cost_by_plan: dict[str, float] = field(default_factory=dict)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def bucket_seconds(window: timedelta) -> int:
    """Hours for a window up to two days, days beyond."""
    return 3600 if window <= timedelta(days=2) else 86400


def _durations(values: Sequence[float]) -> Durations:
    p95 = percentile(values, 0.95)
    return Durations(len(values), round(sum(values) / len(values), 3) if values else None,
                     round(p95, 3) if p95 is not None else None)


def run_stats(since: datetime, until: datetime, runs: Iterable[RunFact], failures: Iterable[FailureFact],
              autofix: Iterable[AutofixFact], costs: Iterable[CostFact],
              passed: dict[tuple[str, str], datetime] | None = None) -> RunStats:
    """``passed``: when each (run, step) first succeeded, which tells a retry that got a step past
    its failure (the ladder writes no entry of its own for it)."""
    runs, failures, autofix, costs = list(runs), list(failures), list(autofix), list(costs)
    by_status = Counter(r.status for r in runs)
    finals = {s.value for s in RunStatus if s.is_final}
    ended = [r for r in runs if r.status in finals and r.finished_at is not None]
    succeeded = sum(r.status == RunStatus.SUCCEEDED for r in ended)
    width = bucket_seconds(until - since)
    start = datetime.fromtimestamp(since.timestamp() // width * width, UTC)
    buckets: dict[datetime, Counter[str]] = {}
    at = start
    while at < until:
        buckets[at] = Counter()
        at += timedelta(seconds=width)
    for f in failures:
        bucket = datetime.fromtimestamp(_utc(f.at).timestamp() // width * width, UTC)
        buckets.setdefault(bucket, Counter())[f.failure_class] += 1
    first_failure: dict[tuple[str, str], AutofixFact] = {}
    resolution: defaultdict[str, list[float]] = defaultdict(list)
    repairs: Counter[str] = Counter()
    retried: set[tuple[str, str]] = set()
    for e in sorted(autofix, key=lambda e: _utc(e.at)):
        key = (e.run_id, e.step)
        if key not in first_failure and e.signal_type:
            first_failure[key] = e
        if e.strategy == "retry":
            retried.add(key)
        rung = RESOLVING.get(e.outcome)
        if rung is None:
            continue
        repairs[rung] += 1
        first = first_failure.pop(key, None)
        if first is not None and first.signal_type:
            resolution[first.signal_type].append(max(0.0, (_utc(e.at) - _utc(first.at)).total_seconds()))
    for key, first in first_failure.items():
        ok = (passed or {}).get(key)
        if key in retried and ok is not None and first.signal_type:
            repairs["retry"] += 1
            resolution[first.signal_type].append(max(0.0, (_utc(ok) - _utc(first.at)).total_seconds()))
    by_tenant: defaultdict[str, float] = defaultdict(float)
    by_plan: defaultdict[str, float] = defaultdict(float)
    for c in costs:
        by_tenant[c.tenant] += c.cost_usd
        by_plan[c.plan] += c.cost_usd
    return RunStats(
        since=since, until=until, bucket_seconds=width, total=len(runs), by_status=dict(sorted(by_status.items())),
        finished=len(ended), success_ratio=round(succeeded / len(ended), 4) if ended else None,
        duration=_durations([(_utc(r.finished_at) - _utc(r.created_at)).total_seconds()
                             for r in ended if r.finished_at is not None]),
        failures_by_class=dict(Counter(f.failure_class for f in failures).most_common()),
        failures_over_time=[(k, dict(v)) for k, v in sorted(buckets.items())],
        resolution_by_class={k: _durations(v) for k, v in sorted(resolution.items())},
        repairs_by_strategy=dict(repairs.most_common()),
        cost_usd=round(sum(c.cost_usd for c in costs), 6), tokens=sum(c.tokens for c in costs),
        cost_by_tenant={k: round(v, 6) for k, v in sorted(by_tenant.items())},
        cost_by_plan={k: round(v, 6) for k, v in sorted(by_plan.items())})
