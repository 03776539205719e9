"""Priority, fairness and slots (``domain.pools``) and the v4 settings (``domain.v4``): pure rules."""

from __future__ import annotations

import pytest

from metabuilder.domain.plans import PlanError, parse_plan
from metabuilder.domain.pools import PriorityClass, Scheduling, parse_weights, run_scheduling, share_slots
from metabuilder.domain.v4 import V4Settings, effective_enabled, platform_v4

H, N, L = PriorityClass.HIGH, PriorityClass.NORMAL, PriorityClass.LOW


@pytest.mark.parametrize(("plan", "override", "step", "expected"), [
    (None, None, None, N), (L, None, None, L), (L, None, H, H), (None, None, L, L),
    (L, H, None, H), (L, H, L, H),  # the run's override beats the step's own
])
def test_a_steps_priority(plan: PriorityClass | None, override: PriorityClass | None,
                          step: PriorityClass | None, expected: PriorityClass) -> None:
    sched = run_scheduling(tenant="acme", plan_priority=plan, override=override, weights={})
    assert sched.for_step(step) is expected
    assert sched.key(step) == {H: 1, N: 3, L: 5}[expected]


def test_the_fairness_key_is_the_tenant_with_its_weight() -> None:
    assert run_scheduling(tenant="acme", plan_priority=None, override=None, weights={"acme": 2.5}) == Scheduling(
        priority=N, override=False, fairness_key="acme", fairness_weight=2.5)
    assert run_scheduling(tenant="b", plan_priority=None, override=None, weights={"acme": 2.5}).fairness_weight == 1.0


@pytest.mark.parametrize(("requested", "cap", "expected"), [
    ({"cpu": 4, "io": 4, "llm": 4}, 12, {"cpu": 4, "io": 4, "llm": 4}),
    ({"cpu": 4, "io": 4, "llm": 4}, 100, {"cpu": 4, "io": 4, "llm": 4}),
    ({"cpu": 4, "io": 4, "llm": 4}, 6, {"cpu": 2, "io": 2, "llm": 2}),
    ({"cpu": 4, "io": 4, "llm": 4}, 4, {"cpu": 2, "io": 1, "llm": 1}),
    ({"cpu": 4, "io": 4, "llm": 4}, 3, {"cpu": 1, "io": 1, "llm": 1}),
    ({"cpu": 30, "io": 1, "llm": 1}, 4, {"cpu": 2, "io": 1, "llm": 1}),
    ({"cpu": 8, "io": 2}, 5, {"cpu": 4, "io": 1}),
    ({"cpu": 16, "io": 16, "llm": 2}, 10, {"cpu": 5, "io": 4, "llm": 1}),
    ({"cpu": 4}, 1, {"cpu": 1}),
    ({}, 1, {}),
])
def test_slots_are_shared_within_the_cap(requested: dict[str, int], cap: int, expected: dict[str, int]) -> None:
    got = share_slots(requested, cap)
    assert got == expected
    assert sum(got.values()) <= cap and all(v >= 1 for v in got.values())


def test_a_cap_below_the_pools_is_refused() -> None:
    with pytest.raises(ValueError, match="polling 3 step pools .* needs at least 3 slots; the cap is 2"):
        share_slots({"cpu": 1, "io": 1, "llm": 1}, 2)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, V4Settings(enabled=True)),
    ({"FEATURE_META_V4_ENABLED": "off", "META_V4_MAX_WORKERS": "3"}, V4Settings(enabled=False, max_workers=3)),
    ({"META_V4_FAIRNESS_WEIGHTS": '{"acme": 2, "free": 0.5}'},
     V4Settings(enabled=True, fairness_weights={"acme": 2.0, "free": 0.5})),
])
def test_platform_v4_settings(env: dict[str, str], expected: V4Settings) -> None:
    assert platform_v4("development", env) == expected


def test_v4_is_off_in_production_unless_switched_on() -> None:
    assert platform_v4("production", {}).enabled is False
    assert platform_v4("staging", {}).enabled is True
    assert platform_v4("production", {"FEATURE_META_V4_ENABLED": "true"}).enabled is True


@pytest.mark.parametrize(("env", "message"), [
    ({"META_V4_MAX_WORKERS": "0"}, "META_V4_MAX_WORKERS='0': expected a number from 1 to 1024"),
    ({"META_V4_MAX_WORKERS": "2.5"}, "META_V4_MAX_WORKERS='2.5': expected a whole number"),
    ({"FEATURE_META_V4_ENABLED": "maybe"}, "FEATURE_META_V4_ENABLED='maybe': expected true or false"),
    ({"META_V4_FAIRNESS_WEIGHTS": "[]"}, "META_V4_FAIRNESS_WEIGHTS: expected a JSON object"),
    ({"META_V4_FAIRNESS_WEIGHTS": '{"a": 0}'}, "META_V4_FAIRNESS_WEIGHTS.a=0: expected a weight from 0.001"),
    ({"META_V4_FAIRNESS_WEIGHTS": '{"a": true}'}, "META_V4_FAIRNESS_WEIGHTS.a=True: expected a weight"),
])
def test_bad_platform_v4_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        platform_v4("development", env)
    assert message in str(err.value)


@pytest.mark.parametrize(("platform", "tenant", "run", "expected"), [
    (False, None, None, (False, "platform")), (False, True, None, (True, "tenant")),
    (True, False, None, (False, "tenant")), (False, True, False, (False, "run")), (False, None, True, (True, "run")),
])
def test_the_v4_flag_precedence(platform: bool, tenant: bool | None, run: bool | None,
                                expected: tuple[bool, str]) -> None:
    flag = effective_enabled(platform, tenant, run)
    assert (flag.enabled, flag.source) == expected


def test_plan_and_step_priorities_are_parsed_with_lines() -> None:
    plan = parse_plan("name: p\npriority: low\nsteps:\n  - name: a\n    command: x\n    priority: high\n"
                      "  - name: b\n    command: y\n")
    assert (plan.priority, plan.steps[0].priority, plan.steps[1].priority) == (L, H, None)
    with pytest.raises(PlanError) as err:
        parse_plan("name: p\npriority: urgent\nsteps:\n  - name: a\n    command: x\n    priority: 1\n")
    text = str(err.value)
    assert "<plan>:2: " in text and "priority: unknown priority 'urgent' (expected one of: high, normal, low)" in text
    assert "<plan>:6: " in text and "steps[0] (a).priority: unknown priority 1" in text


def test_weights_refuse_a_bad_tenant() -> None:
    with pytest.raises(ValueError, match="is not a tenant id"):
        parse_weights({"": 1}, "X")
