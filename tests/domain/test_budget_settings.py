"""The budget settings: the platform's from the environment, a tenant's and a run's, their precedence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from metabuilder.domain.budget_settings import (
    BudgetSettings,
    effective_run_budget,
    llm_worst_case,
    parse_run_budget,
    parse_tenant_budget,
    platform_budgets,
    tenant_periods,
)
from metabuilder.domain.budgets import Dimension
from metabuilder.domain.models_catalogue import ModelSpec, Tier
from metabuilder.worker.settings import Settings, SettingsError

CATALOGUE = '[{"name": "small", "tier": "economy", "price_in": 0.5, "price_out": 1.5, "context_tokens": 128000}]'


def test_the_platform_level_from_the_environment(tmp_path: Path) -> None:
    assert platform_budgets({}) == BudgetSettings()
    (tmp_path / "models.json").write_text(CATALOGUE)
    got = platform_budgets({"META_V4_DEFAULT_TIME_BUDGET_SECONDS": "900", "META_V4_DEFAULT_COST_BUDGET_USD": "2.5",
                            "META_V4_MODEL_CATALOGUE": f"@{tmp_path / 'models.json'}",
                            "META_V4_CPU_PRICE_PER_SECOND": '{"cpu": 0.0001}'})
    assert (got.default_time_seconds, got.default_cost_usd, got.cpu_price_per_second) == (900, 2.5, {"cpu": 0.0001})
    small = got.model("small")
    assert small is not None and small.tier is Tier.ECONOMY and got.model("other") is None
    assert platform_budgets({"META_V4_MODEL_CATALOGUE": CATALOGUE}).catalogue == got.catalogue


@pytest.mark.parametrize(("env", "message"), [
    ({"META_V4_DEFAULT_COST_BUDGET_USD": "lots"}, "META_V4_DEFAULT_COST_BUDGET_USD='lots': expected a number"),
    ({"META_V4_DEFAULT_TIME_BUDGET_SECONDS": "-1"}, "META_V4_DEFAULT_TIME_BUDGET_SECONDS='-1': expected a finite"),
    ({"META_V4_MODEL_CATALOGUE": "@/nowhere/models.json"}, "META_V4_MODEL_CATALOGUE=@/nowhere/models.json: cannot"),
    ({"META_V4_MODEL_CATALOGUE": '[{"name": "x", "price_in": "free"}]'}, "META_V4_MODEL_CATALOGUE[0].price_in"),
    ({"META_V4_CPU_PRICE_PER_SECOND": '{"cpu": -1}'}, "META_V4_CPU_PRICE_PER_SECOND.cpu: must be at least 0"),
    ({"META_V4_CPU_PRICE_PER_SECOND": "[1]"}, "META_V4_CPU_PRICE_PER_SECOND: expected a JSON object"),
])
def test_a_bad_value_fails_at_start_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"META_BUILDER_HOME": "/tmp/mb-budget-settings", **env})
    assert message in str(err.value)


def test_precedence_platform_then_tenant_then_run_per_dimension() -> None:
    platform = BudgetSettings(default_time_seconds=600, default_cost_usd=1.0)
    assert effective_run_budget(platform).sources == {Dimension.TIME: "platform", Dimension.COST: "platform",
                                                       Dimension.ATTEMPTS: "platform"}
    tenant = parse_tenant_budget({"run": {"cost_usd": 0.5, "attempts": 10}}, "t")
    run = parse_run_budget({"attempts": 3, "time_seconds": None}, "r")
    got = effective_run_budget(platform, tenant, run)
    assert got.limits == {Dimension.TIME: None, Dimension.COST: 0.5, Dimension.ATTEMPTS: 3}
    assert got.sources == {Dimension.TIME: "run", Dimension.COST: "tenant", Dimension.ATTEMPTS: "run"}


def test_tenant_budgets_per_day_and_month() -> None:
    tenant = parse_tenant_budget({"cost_usd_per_day": 5, "tokens_per_month": 1e6, "concurrent_runs": 4}, "t")
    got = tenant_periods(tenant, datetime(2026, 12, 3, 23, 59, tzinfo=UTC))
    assert got == {"2026-12-03": {Dimension.COST: 5.0, Dimension.TOKENS: None},
                   "2026-12": {Dimension.COST: None, Dimension.TOKENS: 1e6}}


@pytest.mark.parametrize(("data", "message"), [
    ({"dollars": 1}, "t: unknown tenant budget key(s) 'dollars'"),
    ({"cost_usd_per_day": "5"}, "t.cost_usd_per_day: expected a number"),
    ({"concurrent_runs": 0}, "t.concurrent_runs: expected a whole number of at least 1"),
    ({"run": {"money": 1}}, "t.run: unknown run budget key(s) 'money'"),
    ({"run": [1]}, "t.run: expected an object"),
])
def test_a_bad_tenant_budget_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_tenant_budget(data, "t")
    assert message in str(err.value)


def test_an_llm_calls_worst_case_bounds_its_cost() -> None:
    model = ModelSpec("m", Tier.STANDARD, price_in_per_million=1.0, price_out_per_million=2.0, context_tokens=10**6)
    worst = llm_worst_case(model, prompt_chars=10_000, max_output_tokens=1000)
    assert worst.prompt_tokens == 14_000 and worst.tokens == 15_000
    assert worst.cost_usd == pytest.approx(0.016)
    # Any answer within max_tokens to a prompt of at most that many characters costs no more.
    assert model.cost_usd(10_000, 1000) <= worst.cost_usd
