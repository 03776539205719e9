"""Run statistics over a window: counts, ratio, durations, failures over time, time to resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from metabuilder.domain.run_stats import AutofixFact, CostFact, FailureFact, RunFact, bucket_seconds, run_stats

T0 = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_run_stats_over_a_window() -> None:
    runs = [RunFact("a", "succeeded", at(0), at(2)), RunFact("b", "succeeded", at(10), at(20)),
            RunFact("c", "failed", at(30), at(31)), RunFact("d", "running", at(40), None)]
    failures = [FailureFact("LINT", at(1)), FailureFact("TRANSIENT", at(11)), FailureFact("LINT", at(70))]
    autofix = [AutofixFact("a", "lint", "classify", "failed", "LINT", at(1)),
               AutofixFact("a", "lint", "patch", "applied", None, at(1.5)),
               AutofixFact("a", "lint", "patch", "fixed", None, at(2)),
               AutofixFact("b", "fetch", "classify", "failed", "TRANSIENT", at(11)),
               AutofixFact("b", "fetch", "retry", "retried", None, at(11.1)),
               AutofixFact("c", "test", "classify", "failed", "TEST", at(30.5)),
               AutofixFact("c", "test", "retry", "retried", None, at(30.6))]  # never passed: not a repair
    costs = [CostFact("acme", "p", 0.25, 100), CostFact("acme", "q", 0.5, 50)]
    s = run_stats(at(-60), at(90), runs, failures, autofix, costs, passed={("b", "fetch"): at(12)})
    assert (s.total, s.by_status, s.finished) == (4, {"failed": 1, "running": 1, "succeeded": 2}, 3)
    assert s.success_ratio == round(2 / 3, 4)
    assert (s.duration.count, s.duration.mean_seconds, s.duration.p95_seconds) == (3, 260.0, 600.0)
    assert s.failures_by_class == {"LINT": 2, "TRANSIENT": 1}
    assert s.bucket_seconds == 3600
    assert [(b.hour, c) for b, c in s.failures_over_time] == [
        (5, {}), (6, {"LINT": 1, "TRANSIENT": 1}), (7, {"LINT": 1})]
    assert s.repairs_by_strategy == {"patch": 1, "retry": 1}
    assert {k: v.mean_seconds for k, v in s.resolution_by_class.items()} == {"LINT": 60.0, "TRANSIENT": 60.0}
    assert (s.cost_usd, s.tokens, s.cost_by_plan) == (0.75, 150, {"p": 0.25, "q": 0.5})


def test_an_empty_window_and_the_bucket_width() -> None:
    s = run_stats(at(0), at(60 * 24 * 7), [], [], [], [])
    assert (s.total, s.success_ratio, s.duration.mean_seconds, s.cost_usd) == (0, None, None, 0.0)
    assert s.bucket_seconds == 86400 and len(s.failures_over_time) == 8  # the partial first day too
    assert bucket_seconds(timedelta(hours=48)) == 3600
