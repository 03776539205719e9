"""The pure rules of golden tasks: reading expected.yaml, reading a run's timeline, scoring."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from metabuilder.domain.golden import (
    GoldenError,
    Observed,
    first_class,
    observed_strategy,
    parse_expected,
    score,
    summarize,
)
from metabuilder.domain.outcomes import EventOutcome, Fixer, Strategy
from metabuilder.domain.payloads import AutofixEvent
from metabuilder.domain.taxonomy import FailureType

BASE = {"step": "test", "class": "TEST_ASSERT", "strategy": "patch", "status": "succeeded"}


def ev(step: str, strategy: str, outcome: str, signal: str | None = "TEST_ASSERT") -> AutofixEvent:
    return AutofixEvent(seq=0, at=datetime(2026, 1, 1, tzinfo=UTC), step=step, strategy=Strategy(strategy),
                        outcome=EventOutcome(outcome), signal_type=FailureType(signal) if signal else None)


@pytest.mark.parametrize(("change", "message"), [
    ({"class": "FLAKY"}, "class='FLAKY'"),
    ({"strategy": "classify"}, "strategy='classify'"),
    ({"status": "green"}, "status='green'"),
    ({"fixer": "llm", "strategy": "retry"}, "only expected with strategy patch"),
    ({"colour": "red"}, "unknown key(s) colour"),
    ({"step": ""}, "misses step"),
])
def test_a_bad_expected_yaml_is_refused_naming_the_task_and_field(change: dict[str, str], message: str) -> None:
    with pytest.raises(GoldenError, match="^t1: ") as err:
        parse_expected({**BASE, **change}, "t1")
    assert message in str(err.value)


def test_expected_yaml_reads_every_field() -> None:
    e = parse_expected({**BASE, "fixer": "llm", "check": "make test", "unsafe": True, "language": "shell"}, "t")
    assert (e.failure_class, e.strategy, e.fixer, e.check, e.unsafe, e.language) == (
        FailureType.TEST_ASSERT, Strategy.PATCH, Fixer.LLM, "make test", True, "shell")


@pytest.mark.parametrize(("events", "succeeded", "expected"), [
    ([ev("s", "retry", "retried", "TRANSIENT")], True, Strategy.RETRY),
    ([ev("s", "retry", "retried", "TRANSIENT")], False, None),
    ([ev("s", "classify", "failed"), ev("s", "flake_check", "flaky")], True, Strategy.FLAKE_CHECK),
    ([ev("s", "flake_check", "failed_again"), ev("s", "patch", "applied"), ev("s", "patch", "fixed")], True,
     Strategy.PATCH),
    ([ev("s", "patch", "stuck"), ev("s", "rollback", "rolled_back")], False, Strategy.ROLLBACK),
    ([ev("s", "replan", "replanned"), ev("s", "escalate", "escalated")], False, Strategy.ESCALATE),
    ([ev("other", "patch", "fixed")], True, None),
])
def test_the_resolving_rung_is_the_last_repair_outcome_of_the_step(
        events: list[AutofixEvent], succeeded: bool, expected: Strategy | None) -> None:
    assert observed_strategy(events, "s", succeeded) is expected


def test_the_class_is_the_steps_first_classified_failure() -> None:
    events = [ev("a", "classify", "failed", "LINT"), ev("s", "classify", "failed", "RUNTIME"),
              ev("s", "patch", "failed_again", "TYPECHECK")]
    assert first_class(events, "s") is FailureType.RUNTIME
    assert first_class(events, "missing") is None


def observed(**kw: object) -> Observed:
    base: dict[str, object] = {"failure_class": FailureType.TEST_ASSERT, "strategy": Strategy.PATCH,
                               "status": "succeeded", "fixer": Fixer.LLM, "check_passed": True, "seconds": 2.0}
    return Observed(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("obs", "resolved", "miss"), [
    (observed(), True, ""),
    (observed(failure_class=FailureType.RUNTIME), False, "class RUNTIME"),
    (observed(fixer=Fixer.FIX_COMMAND), False, "fixer fix_command"),
    (observed(check_passed=False), False, "fails `make test`"),
    (observed(unsafe_applied=1), False, "1 unsafe patch"),
    (observed(error="TimeoutError: late"), False, "TimeoutError"),
])
def test_a_task_is_resolved_only_when_every_decision_and_check_is_right(
        obs: Observed, resolved: bool, miss: str) -> None:
    e = parse_expected({**BASE, "fixer": "llm", "check": "make test"}, "t")
    s = score("t", e, obs)
    assert s.resolved is resolved
    summary = summarize([s])
    assert (summary.misses[0] if summary.misses else "").find(miss) >= 0


def test_the_summary_scores_each_dimension_apart() -> None:
    e = parse_expected(BASE, "t")
    scores = [score("a", e, observed()), score("b", e, observed(status="rolled_back")),
              score("c", e, observed(strategy=Strategy.ROLLBACK, status="rolled_back", seconds=6.0))]
    s = summarize(scores)
    assert (s.tasks, s.resolved) == (3, 1)
    assert s.accuracy == {"class": 1.0, "strategy": 0.667, "status": 0.333}
    assert s.seconds_by_class == {"TEST_ASSERT": {"median": 2.0, "max": 6.0}}
