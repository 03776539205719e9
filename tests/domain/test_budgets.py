"""Budgets, the model catalogue and SLA classes: pure tables."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from metabuilder.domain.budgets import (
    Dimension,
    Ledger,
    Period,
    ShortAction,
    Shortfall,
    on_short,
    period_key,
    shortfall,
)
from metabuilder.domain.models_catalogue import ModelSpec, Tier, choose_model, parse_catalogue
from metabuilder.domain.sla import DEFAULT_SLA, SlaClass, SlaState, parse_sla_classes, sla_state


@pytest.mark.parametrize(("ledger", "amount", "fits"), [
    (Ledger(None), 1e9, True),
    (Ledger(1.0), 1.0, True),
    (Ledger(1.0, reserved=0.5), 0.5, True),
    (Ledger(1.0, reserved=0.5, spent=0.25), 0.5, False),
    (Ledger(0.0), 0.0, True),
    (Ledger(0.0), 0.01, False),
    (Ledger(1.0, spent=2.0), 0.0, True),
])
def test_a_ledger_takes_what_is_left(ledger: Ledger, amount: float, fits: bool) -> None:
    assert ledger.fits(amount) is fits


def test_reserve_then_settle_moves_the_amount_from_reserved_to_spent() -> None:
    ledger = Ledger(10.0).reserve(4.0).reserve(3.0)
    assert (ledger.reserved, ledger.available) == (7.0, 3.0)
    ledger = ledger.settle(4.0, 1.5)
    assert (ledger.reserved, ledger.spent, ledger.available) == (3.0, 1.5, 5.5)
    with pytest.raises(ValueError, match="negative"):
        ledger.reserve(-1.0)


@pytest.mark.parametrize(("ledger", "fraction"), [
    (Ledger(None, spent=5), None), (Ledger(10.0, reserved=2, spent=3), 0.5), (Ledger(0.0), 0.0),
    (Ledger(0.0, spent=1), math.inf),
])
def test_used_fraction(ledger: Ledger, fraction: float | None) -> None:
    assert ledger.used_fraction == fraction


def test_shortfall_names_the_first_scope_and_dimension_that_does_not_fit() -> None:
    run = {Dimension.COST: Ledger(5.0), Dimension.ATTEMPTS: Ledger(3.0, spent=3.0)}
    tenant = {Dimension.COST: Ledger(1.0, spent=0.9)}
    assert shortfall({"run": run, "tenant": tenant}, {Dimension.COST: 0.5}) == Shortfall(
        "tenant", Dimension.COST, 0.5, pytest.approx(0.1))
    found = shortfall({"run": run, "tenant": tenant}, {Dimension.COST: 0.05, Dimension.ATTEMPTS: 1})
    assert found is not None and (found.scope, found.dimension) == ("run", Dimension.ATTEMPTS)
    assert "run budget for attempts: needs 1, 0 left" == found.describe()
    assert shortfall({"run": run, "tenant": tenant}, {Dimension.COST: 0.05}) is None
    assert shortfall({"run": {}}, {Dimension.TOKENS: 1e9}) is None


@pytest.mark.parametrize(("period", "key"), [(Period.DAY, "2026-12-02"), (Period.MONTH, "2026-12")])
def test_period_key(period: Period, key: str) -> None:
    assert period_key(period, datetime(2026, 12, 2, 23, 59, tzinfo=UTC)) == key


CATALOGUE = [
    ModelSpec("big", Tier.PREMIUM, 10.0, 30.0, 128_000),
    ModelSpec("mid", Tier.STANDARD, 1.0, 3.0, 32_000),
    ModelSpec("mid-small-context", Tier.STANDARD, 0.5, 1.0, 4_000),
    ModelSpec("tiny", Tier.ECONOMY, 0.1, 0.2, 16_000),
]


@pytest.mark.parametrize(("tier", "remaining", "prompt", "chosen", "why"), [
    (Tier.PREMIUM, 1.0, 10_000, "big", "big (premium)"),
    (Tier.PREMIUM, 0.05, 10_000, "mid", "stepped down"),
    (Tier.STANDARD, 1.0, 10_000, "mid", "mid (standard)"),
    (Tier.STANDARD, 1.0, 1_000, "mid-small-context", "mid-small-context"),
    (Tier.STANDARD, 0.0021, 10_000, "tiny", "stepped down"),
    (Tier.ECONOMY, 0.0001, 10_000, None, "no model's worst case fits"),
    (Tier.ECONOMY, 1.0, 20_000, None, "no model's context holds"),
])
def test_choose_model(tier: Tier, remaining: float, prompt: int, chosen: str | None, why: str) -> None:
    choice = choose_model(CATALOGUE, tier, prompt_tokens=prompt, max_output_tokens=1000, remaining_usd=remaining)
    assert (choice.model.name if choice.model else None) == chosen
    assert why in choice.reason
    if choice.model is not None:
        assert choice.reserve_usd == pytest.approx(choice.model.worst_case_usd(prompt, 1000))
        assert choice.reserve_usd <= remaining


def test_the_worst_case_bounds_the_real_cost() -> None:
    model = CATALOGUE[1]
    assert model.cost_usd(10_000, 999) <= model.worst_case_usd(10_000, 1000)


def test_parse_catalogue() -> None:
    models = parse_catalogue('[{"name": "m", "tier": "Economy", "price_in": 0.5, "price_out": 1.5, '
                             '"context_tokens": 8000, "endpoint": "http://127.0.0.1:9/v1"}]', "catalogue")
    assert models == [ModelSpec("m", Tier.ECONOMY, 0.5, 1.5, 8000, "http://127.0.0.1:9/v1")]


@pytest.mark.parametrize(("text", "message"), [
    ("{", "catalogue: not JSON"),
    ('{"name": "m"}', "expected a JSON list"),
    ('[{"tier": "economy"}]', r"\[0\].name: expected"),
    ('[{"name": "m", "tier": "huge"}]', r"\[0\].tier: 'huge' is not one of economy, standard, premium"),
    ('[{"name": "m", "price_in": -1}]', r"\[0\].price_in: must be at least 0"),
    ('[{"name": "m", "price_out": "1"}]', r"\[0\].price_out: expected a number"),
    ('[{"name": "m"}, {"name": "m"}]', r"\[1\].name: 'm' is listed twice"),
    ('[{"name": "m", "cost": 1}]', r"\[0\]: unknown field\(s\) cost"),
])
def test_a_bad_catalogue_names_the_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_catalogue(text, "catalogue")


def test_sla_classes_override_the_defaults_field_by_field() -> None:
    profiles = parse_sla_classes('{"FAST": {"time_budget_seconds": 60, "model_tier": "standard"}}', "sla")
    assert profiles[SlaClass.FAST].time_budget_seconds == 60
    assert profiles[SlaClass.FAST].model_tier is Tier.STANDARD
    assert profiles[SlaClass.FAST].priority == DEFAULT_SLA[SlaClass.FAST].priority
    assert profiles[SlaClass.THOROUGH] == DEFAULT_SLA[SlaClass.THOROUGH]
    assert parse_sla_classes("", "sla") == DEFAULT_SLA


@pytest.mark.parametrize(("text", "message"), [
    ('{"rapid": {}}', "'rapid' is not one of fast, normal, thorough"),
    ('{"fast": {"priority": "urgent"}}', "fast.priority: 'urgent' is not one of high, normal, low"),
    ('{"thorough": {"candidates": 0}}', "thorough.candidates: must be at least 1"),
    ('{"thorough": {"candidates": 2.5}}', "thorough.candidates: expected a whole number"),
    ('{"fast": {"depth": 1}}', r"fast: unknown field\(s\) depth"),
    ('[]', "expected a JSON object"),
])
def test_a_bad_sla_class_names_the_class_and_field(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sla_classes(text, "sla")


@pytest.mark.parametrize(("elapsed", "budget", "state"), [
    (0, 100, SlaState.OK), (79.9, 100, SlaState.OK), (80, 100, SlaState.WARNING),
    (100, 100, SlaState.VIOLATED), (5, None, SlaState.OK), (5, 0, SlaState.OK),
])
def test_sla_state(elapsed: float, budget: float | None, state: SlaState) -> None:
    assert sla_state(elapsed, budget) is state


@pytest.mark.parametrize(("dimension", "cheaper", "gates", "action"), [
    (Dimension.COST, True, True, ShortAction.CHEAPER_MODEL),
    (Dimension.COST, False, True, ShortAction.SKIP_LLM),
    (Dimension.TOKENS, False, False, ShortAction.SKIP_LLM),
    (Dimension.TIME, True, True, ShortAction.ESCALATE),
    (Dimension.ATTEMPTS, True, False, ShortAction.STOP),
])
def test_what_a_short_budget_does(dimension: Dimension, cheaper: bool, gates: bool, action: ShortAction) -> None:
    assert on_short(dimension, cheaper_model=cheaper, gates=gates) is action
