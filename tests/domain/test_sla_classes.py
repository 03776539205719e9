"""SLA classes as a run gets them: the plan's ``sla:``, the run's over the plan's, the priority's
precedence, the rungs a depth allows, and best of N's choice (pure rules)."""

from __future__ import annotations

import pytest

from metabuilder.domain.models_catalogue import Tier
from metabuilder.domain.plans import PlanError, parse_plan, plan_to_dict
from metabuilder.domain.pools import PriorityClass
from metabuilder.domain.sla import (
    DEFAULT_SLA,
    RunSla,
    SlaClass,
    diff_size,
    parse_sla,
    parse_sla_classes,
    rungs_allowed,
    smallest_passing,
)
from metabuilder.domain.v4 import EffectiveFlag, platform_v4
from metabuilder.service.scheduling import V4Choice

ON, OFF = EffectiveFlag(True, "platform"), EffectiveFlag(False, "platform")
STEPS = "steps:\n  - name: a\n    command: x\n"


def test_a_plan_names_its_sla_class_with_a_line_on_a_bad_one() -> None:
    plan = parse_plan(f"name: p\nsla: thorough\n{STEPS}")
    assert plan.sla is SlaClass.THOROUGH and plan_to_dict(plan)["sla"] == "thorough"
    assert parse_plan(f"name: p\n{STEPS}").sla is None
    with pytest.raises(PlanError) as err:
        parse_plan(f"name: p\nsla: urgent\n{STEPS}")
    assert "<plan>:2: " in str(err.value) and "sla: unknown SLA class 'urgent'" in str(err.value)


@pytest.mark.parametrize(("run", "plan_sla", "plan_priority", "override", "expected"), [
    (None, None, None, None, (None, PriorityClass.NORMAL)),
    (SlaClass.FAST, None, None, None, ((SlaClass.FAST, "run"), PriorityClass.HIGH)),
    (None, SlaClass.THOROUGH, None, None, ((SlaClass.THOROUGH, "plan"), PriorityClass.LOW)),
    (SlaClass.FAST, SlaClass.THOROUGH, None, None, ((SlaClass.FAST, "run"), PriorityClass.HIGH)),
    # A plan's own priority beats its class's; a run's --priority beats both.
    (SlaClass.FAST, None, "low", None, ((SlaClass.FAST, "run"), PriorityClass.LOW)),
    (SlaClass.FAST, None, None, PriorityClass.LOW, ((SlaClass.FAST, "run"), PriorityClass.LOW)),
])
def test_the_runs_class_and_priority(run: SlaClass | None, plan_sla: SlaClass | None, plan_priority: str | None,
                                     override: PriorityClass | None, expected: tuple[object, PriorityClass]) -> None:
    text = "name: p\n" + (f"sla: {plan_sla}\n" if plan_sla else "") + (
        f"priority: {plan_priority}\n" if plan_priority else "") + STEPS
    plan = parse_plan(text)
    choice = V4Choice(flag=ON, priority=override, sla=run)
    sla = choice.run_sla(plan)
    assert ((sla.sla_class, sla.source) if sla else None) == expected[0]
    sched = choice.scheduling("acme", plan)
    assert sched is not None and sched.priority is expected[1]


def test_with_v4_off_a_run_has_no_class() -> None:
    plan = parse_plan(f"name: p\nsla: fast\n{STEPS}")
    assert V4Choice(flag=OFF).run_sla(plan) is None


def test_the_setting_changes_what_a_class_means() -> None:
    v4 = platform_v4("development", {"META_V4_SLA_CLASSES": '{"fast": {"repair_depth": 0, "model_tier": "standard"}}'})
    sla = RunSla.of(SlaClass.FAST, v4.sla_classes)
    assert (sla.repair_depth, sla.model_tier, sla.priority) == (0, Tier.STANDARD, "high")
    assert RunSla.of(SlaClass.THOROUGH).as_dict() == {
        "class": "thorough", "priority": "low", "time_budget_seconds": 7200.0, "model_tier": "premium",
        "repair_depth": 3, "candidates": 3, "source": "run"}
    with pytest.raises(ValueError, match="META_V4_SLA_CLASSES.fast.priority: 'urgent' is not one of"):
        platform_v4("development", {"META_V4_SLA_CLASSES": '{"fast": {"priority": "urgent"}}'})
    assert parse_sla_classes("", "x") == DEFAULT_SLA


def test_parse_sla_names_where() -> None:
    assert parse_sla(" Fast ", "--sla") is SlaClass.FAST
    with pytest.raises(ValueError, match="--sla='soon': expected one of fast, normal, thorough"):
        parse_sla("soon", "--sla")


@pytest.mark.parametrize(("depth", "rungs"), [
    (0, ()), (1, ("patch",)), (2, ("patch", "replan")), (3, ("patch", "replan", "rollback")),
    (9, ("patch", "replan", "rollback")),
])
def test_the_rungs_a_depth_allows(depth: int, rungs: tuple[str, ...]) -> None:
    assert rungs_allowed(depth) == rungs


def test_best_of_n_takes_the_smallest_that_passed() -> None:
    assert smallest_passing([(0, True, 5), (1, False, 1), (2, True, 3)]) == 2
    assert smallest_passing([(0, True, 3), (1, True, 3)]) == 0
    assert smallest_passing([(0, False, 1)]) is None and smallest_passing([]) is None
    diff = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n c\n"
    assert diff_size(diff) == 2
