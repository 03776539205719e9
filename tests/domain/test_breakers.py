"""Circuit breakers as pure values: open on a storm, probe after the cooldown, back off on a failed probe."""

from __future__ import annotations

import pytest

from metabuilder.domain.breakers import (
    DEFAULT_POLICIES,
    Admission,
    Breaker,
    BreakerKey,
    BreakerPolicy,
    BreakerState,
    Override,
    StepNeeds,
    admit,
    breaker_keys,
    named_dependencies,
    override,
    parse_policies,
    record_failure,
    record_success,
    wait_too_long,
)
from metabuilder.domain.taxonomy import FailureType

KEY = BreakerKey("acme", FailureType.TRANSIENT, "pypi.org:443")
POLICY = BreakerPolicy(threshold=3, window_seconds=60, cooldown_seconds=10, backoff=2, max_cooldown_seconds=35)


def failures(*times: float, b: Breaker | None = None) -> Breaker:
    b = b or Breaker(KEY)
    for t in times:
        b, _ = record_failure(b, t, POLICY, run_id="r")
    return b


@pytest.mark.parametrize(("times", "state"), [
    ((0, 1), BreakerState.CLOSED),
    ((0, 1, 2), BreakerState.OPEN),
    ((0, 30, 61), BreakerState.CLOSED),   # the first fell out of the window
    ((0, 30, 59), BreakerState.OPEN),
    ((0, 70, 80, 90), BreakerState.OPEN),
])
def test_threshold_failures_within_the_window_open_it(times: tuple[float, ...], state: BreakerState) -> None:
    assert failures(*times).state is state


def test_opening_is_a_transition_with_a_reason_and_sets_the_first_probe() -> None:
    b, t = record_failure(failures(0, 1), 2, POLICY)
    assert t is not None and (t.before, t.after) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert t.reason == "3 failures within 60s"
    assert (b.opened_at, b.next_probe_at, b.trips, b.failures) == (2, 12, 1, ())


@pytest.mark.parametrize(("now", "run", "admission", "until"), [
    (5, "a", Admission.WAIT, 12),     # before the cooldown ends: wait for it
    (12, "a", Admission.PROBE, None),  # the first to ask after it probes
])
def test_an_open_breaker_waits_then_lets_one_probe(now: float, run: str, admission: Admission,
                                                  until: float | None) -> None:
    d = admit(failures(0, 1, 2), now, run, POLICY)
    assert (d.admission, d.until) == (admission, until)


def test_while_one_run_probes_the_others_wait_and_the_probe_may_ask_again() -> None:
    probing = admit(failures(0, 1, 2), 12, "a", POLICY)
    assert probing.breaker is not None and probing.breaker.state is BreakerState.HALF_OPEN
    assert probing.transition is not None and probing.transition.after is BreakerState.HALF_OPEN
    b = probing.breaker
    other = admit(b, 13, "b", POLICY)
    assert (other.admission, other.until) == (Admission.WAIT, 23)
    assert admit(b, 14, "a", POLICY).admission is Admission.PROBE


def test_a_probe_that_never_reports_is_handed_to_another_run() -> None:
    b = admit(failures(0, 1, 2), 12, "a", POLICY).breaker
    assert b is not None
    d = admit(b, 12 + POLICY.probe_timeout_seconds, "b", POLICY)
    assert d.admission is Admission.PROBE and d.breaker is not None and d.breaker.probe_run == "b"


def test_a_passing_probe_closes_it() -> None:
    b = admit(failures(0, 1, 2), 12, "a", POLICY).breaker
    assert b is not None
    closed, t = record_success(b, 15, run_id="a")
    assert closed.state is BreakerState.CLOSED and t is not None and t.reason == "the probe (run a) passed"
    assert admit(closed, 16, "b", POLICY).admission is Admission.RUN


@pytest.mark.parametrize(("probe_failures", "cooldown"), [(1, 20), (2, 35), (3, 35)])
def test_a_failing_probe_reopens_it_with_a_longer_cooldown_up_to_the_cap(probe_failures: int, cooldown: float) -> None:
    b, now = failures(0, 1, 2), 2.0
    for _ in range(probe_failures):
        assert b.next_probe_at is not None
        now = b.next_probe_at
        b = admit(b, now, "p", POLICY).breaker  # type: ignore[assignment]
        b, t = record_failure(b, now + 1, POLICY, run_id="p")
        assert t is not None and t.after is BreakerState.OPEN
    assert b.cooldown_seconds == cooldown
    assert b.trips == 1 + probe_failures


def test_failures_of_runs_let_through_before_it_opened_change_nothing() -> None:
    b = failures(0, 1, 2)
    assert record_failure(b, 3, POLICY, run_id="late") == (b, None)
    half = admit(b, 12, "a", POLICY).breaker
    assert half is not None
    assert record_failure(half, 13, POLICY, run_id="not-the-probe") == (half, None)
    assert record_success(half, 13, run_id="not-the-probe") == (half, None)


@pytest.mark.parametrize(("action", "state", "probes"), [
    (Override.OPEN, BreakerState.OPEN, False),
    (Override.CLOSE, BreakerState.CLOSED, True),
    (Override.RESET, BreakerState.CLOSED, True),
])
def test_operator_overrides(action: Override, state: BreakerState, probes: bool) -> None:
    b, _ = override(failures(0, 1), action, 5, POLICY)
    assert b.state is state
    later = admit(b, 10_000, "x", POLICY)
    assert (later.admission is not Admission.WAIT) is probes


def test_reset_forgets_the_grown_cooldown_and_close_keeps_it() -> None:
    b = failures(0, 1, 2)
    b = admit(b, 12, "p", POLICY).breaker  # type: ignore[assignment]
    b, _ = record_failure(b, 13, POLICY, run_id="p")
    assert override(b, Override.CLOSE, 14, POLICY)[0].cooldown_seconds == 20
    assert override(b, Override.RESET, 14, POLICY)[0] == Breaker(KEY)


@pytest.mark.parametrize(("since", "until", "too_long"), [(0, 3600, False), (0, 3601, True)])
def test_waiting_past_the_maximum(since: float, until: float, too_long: bool) -> None:
    assert wait_too_long(since, until, BreakerPolicy()) is too_long


@pytest.mark.parametrize("kwargs", [dict(threshold=0), dict(backoff=0.5),
                                    dict(cooldown_seconds=10, max_cooldown_seconds=5)])
def test_a_bad_policy_says_what_is_wrong(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="breaker policy: "):
        BreakerPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("line", "deps"), [
    ("curl: (22) The requested URL returned error: 503 for http://127.0.0.1:8081/simple/", ["127.0.0.1:8081"]),
    ("ERROR: Could not install packages: HTTPSConnectionPool(host='pypi.org', port=443)", ["pypi.org:443"]),
    ("npm ERR! network request to https://registry.npmjs.org/react failed", ["registry.npmjs.org:443"]),
    ("fatal: unable to access 'https://user:tok@github.com/o/r.git/': 502", ["github.com:443"]),
    ("psql: error: could not connect to server: Connection refused. Is the server running on host "
     "\"db.internal\" and accepting TCP/IP connections on port 5432?", ["db.internal"]),
    ("dial tcp 10.0.0.7:6379: connect: connection refused", ["10.0.0.7:6379"]),
    ("Could not resolve host: mirror.example.com", ["mirror.example.com"]),
    ("redis://cache.local/0 timed out", ["cache.local:6379"]),
    ("AssertionError: expected 3 got 4 in tests/test_x.py:12", []),
    ("ModuleNotFoundError: No module named 'yaml'", []),
])
def test_what_a_failure_names(line: str, deps: list[str]) -> None:
    assert named_dependencies([line]) == deps


def test_the_failures_names_win_and_a_failure_naming_nothing_is_charged_to_the_declared_needs() -> None:
    assert StepNeeds(declared=("pypi",), named=("10.0.0.1:80",)).dependencies() == ("10.0.0.1:80",)
    assert StepNeeds(declared=("pypi", "staging-db")).dependencies() == ("pypi", "staging-db")


@pytest.mark.parametrize(("cls", "count"), [
    (FailureType.TRANSIENT, 1), (FailureType.RATE_LIMIT, 1), (FailureType.INFRA, 1),
    (FailureType.TEST_ASSERT, 0), (FailureType.LINT, 0), (FailureType.UNKNOWN, 0), ("NOT_A_CLASS", 0),
])
def test_only_classes_that_name_a_dependency_have_breakers(cls: FailureType | str, count: int) -> None:
    assert len(breaker_keys("acme", cls, StepNeeds(declared=("pypi",)))) == count


def test_policies_from_the_setting() -> None:
    policies = parse_policies('{"transient": {"threshold": 2, "cooldown_seconds": 1}, "INFRA": null}')
    assert policies[FailureType.TRANSIENT] == BreakerPolicy(threshold=2, window_seconds=60, cooldown_seconds=1)
    assert FailureType.INFRA not in policies and FailureType.RATE_LIMIT in policies
    assert parse_policies("") == dict(DEFAULT_POLICIES)
    lint = parse_policies('{"LINT": {"threshold": 9}}')[FailureType.LINT]
    assert lint.threshold == 9  # a class may be given a breaker


@pytest.mark.parametrize(("text", "why"), [
    ("{", "META_V4_BREAKER_POLICIES: not JSON"),
    ("[]", "expected a JSON object"),
    ('{"NOPE": {}}', "'NOPE' is not a failure class"),
    ('{"TRANSIENT": 3}', "META_V4_BREAKER_POLICIES.TRANSIENT: expected an object"),
    ('{"TRANSIENT": {"treshold": 3}}', "unknown field(s) treshold"),
    ('{"TRANSIENT": {"threshold": "3"}}', "TRANSIENT.threshold: expected a number"),
    ('{"TRANSIENT": {"threshold": 0}}', "TRANSIENT: breaker policy: threshold must be above 0"),
])
def test_a_bad_policy_setting_names_the_class_and_field(text: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_policies(text)
    assert why in str(err.value)
