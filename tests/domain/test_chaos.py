"""The chaos engine's pure rules: deterministic decisions, weights, scopes and the statistics."""

from __future__ import annotations

import pytest

from metabuilder.domain.chaos import (
    ChaosScope,
    EventFacts,
    EventOutcome,
    Fault,
    FaultParams,
    FaultType,
    choose_scope,
    decide,
    parse_weights,
    percentile,
    summarize,
)


def scope(**kw: object) -> ChaosScope:
    return ChaosScope(tenant="acme", **kw)  # type: ignore[arg-type]


def test_the_decision_is_a_function_of_run_step_attempt_and_seed() -> None:
    s = scope(probability=0.5)
    decisions = [decide(s, f"run-{i}", "build", 1) for i in range(200)]
    assert decisions == [decide(s, f"run-{i}", "build", 1) for i in range(200)]
    other_seed = [decide(scope(probability=0.5, seed=7), f"run-{i}", "build", 1) for i in range(200)]
    assert decisions != other_seed
    assert [decide(s, "run-1", "build", a) for a in range(1, 30)] != [decide(s, "run-1", "test", a)
                                                                      for a in range(1, 30)]


@pytest.mark.parametrize("probability", [0.0, 0.1, 0.5, 1.0])
def test_the_probability_is_the_share_of_attempts_injected(probability: float) -> None:
    n = 4000
    injected = sum(decide(scope(probability=probability), f"r{i}", "s", 1) is not None for i in range(n))
    assert abs(injected / n - probability) < 0.03


def test_weights_pick_the_types_in_proportion_and_never_a_zero_weight() -> None:
    s = scope(probability=1.0, weights={FaultType.TRANSIENT_ERROR: 3.0, FaultType.LATENCY: 1.0,
                                        FaultType.WORKER_CRASH: 0.0})
    picks = [decide(s, f"r{i}", "s", 1) for i in range(4000)]
    types = [p.type for p in picks if p is not None]
    assert set(types) == {FaultType.TRANSIENT_ERROR, FaultType.LATENCY}
    assert abs(types.count(FaultType.TRANSIENT_ERROR) / len(types) - 0.75) < 0.03


def test_fault_sizes_come_from_the_params() -> None:
    params = FaultParams(retry_after_seconds=4.0, max_latency_seconds=2.0, timeout_cap_seconds=9.0)
    for t, check in ((FaultType.RATE_LIMIT, lambda s: s == 4.0), (FaultType.TIMEOUT, lambda s: s == 9.0),
                     (FaultType.LATENCY, lambda s: 0.2 <= s <= 2.0), (FaultType.DISK_FULL, lambda s: s == 0.0)):
        fault = decide(scope(probability=1.0, weights={t: 1.0}), "r", "s", 1, params)
        assert fault is not None and fault.type is t and check(fault.seconds), fault


def test_steps_and_max_attempt_narrow_the_scope() -> None:
    s = scope(probability=1.0, steps=("probe",), max_attempt=2)
    assert decide(s, "r", "other", 1) is None
    assert decide(s, "r", "probe", 1) is not None and decide(s, "r", "probe", 2) is not None
    assert decide(s, "r", "probe", 3) is None
    assert decide(None, "r", "probe", 1) is None


def test_a_run_scope_wins_over_its_tenant_and_expired_scopes_are_off() -> None:
    tenant, run = scope(probability=0.1), scope(run_id="r1", probability=1.0)
    assert choose_scope([tenant, run], "acme", "r1", 0.0) is run
    assert choose_scope([tenant, run], "acme", "r2", 0.0) is tenant
    assert choose_scope([tenant, run], "other", "r1", 0.0) is None
    expired = scope(run_id="r1", probability=1.0, expires_at=100.0)
    assert choose_scope([tenant, expired], "acme", "r1", 99.0) is expired
    assert choose_scope([tenant, expired], "acme", "r1", 100.0) is tenant


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"),
    ("nonsense=1", "'nonsense' is not a fault type"),
    ("latency", "expected latency=<a number"),
    ("latency=x", "expected latency=<a number"),
    ("latency=-1", "expected a weight of 0 or more"),
    ("latency=0", "every weight is 0"),
])
def test_bad_weights_are_refused_naming_the_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="META_X") as err:
        parse_weights(text, "META_X")
    assert message in str(err.value)


def test_weights_parse_and_unnamed_types_get_zero() -> None:
    weights = parse_weights("Transient_Error=3, latency=0.5")
    assert weights[FaultType.TRANSIENT_ERROR] == 3.0 and weights[FaultType.LATENCY] == 0.5
    assert weights[FaultType.DISK_FULL] == 0.0


@pytest.mark.parametrize("bad", [-0.1, 1.5, True])
def test_a_scope_refuses_a_bad_probability(bad: object) -> None:
    with pytest.raises(ValueError, match="probability"):
        scope(probability=bad)


def test_statistics_by_type_recovery_rate_mean_and_p95() -> None:
    events = [EventFacts(FaultType.TRANSIENT_ERROR, EventOutcome.RECOVERED, float(s)) for s in range(1, 21)]
    events += [EventFacts(FaultType.TRANSIENT_ERROR, EventOutcome.UNRECOVERED),
               EventFacts(FaultType.LATENCY, EventOutcome.PENDING)]
    stats = summarize(events)
    t = stats.by_type[FaultType.TRANSIENT_ERROR]
    assert (t.injections, t.recovered, t.unrecovered, t.pending) == (21, 20, 1, 0)
    assert t.recovery_rate == round(20 / 21, 4)
    assert t.mean_recovery_seconds == 10.5 and t.p95_recovery_seconds == 19.0
    assert stats.by_type[FaultType.LATENCY].recovery_rate is None
    assert stats.by_type[FaultType.DISK_FULL].injections == 0
    assert stats.total.injections == 22 and stats.total.pending == 1
    assert percentile([], 0.95) is None and percentile([3.0], 0.95) == 3.0


def test_a_fault_knows_the_class_it_should_be_classified_as() -> None:
    assert str(Fault(FaultType.SCHEMA_DRIFT).expected_class) == "SCHEMA_MIGRATION"
    assert Fault(FaultType.LATENCY).expected_class is None
