"""Budget settings (seed 002 sections 2 and 3): the platform's defaults, a tenant's budgets and a
run's, with the precedence platform -> tenant -> run; and the worst case an LLM call reserves.

- The platform (environment): ``META_V4_DEFAULT_TIME_BUDGET_SECONDS`` and
  ``META_V4_DEFAULT_COST_BUDGET_USD`` (a run's time and cost limits unless its tenant or the run
  says otherwise), ``META_V4_MODEL_CATALOGUE`` (the model price catalogue, JSON or ``@file``) and
  ``META_V4_CPU_PRICE_PER_SECOND`` (USD per CPU-second, per step pool, JSON).
- A tenant: ``cost_usd_per_day``, ``cost_usd_per_month``, ``tokens_per_day``,
  ``tokens_per_month``, ``concurrent_runs``, and ``run`` (the defaults of its runs' budgets).
- A run: ``time_seconds``, ``cost_usd``, ``attempts``.

Everything here is pure; ``service.budgets`` reads and writes the levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from metabuilder.domain.budgets import Dimension, Period, period_key
from metabuilder.domain.models_catalogue import ModelSpec, parse_catalogue
from metabuilder.domain.settings_json import json_value, number

TIME_BUDGET_VAR = "META_V4_DEFAULT_TIME_BUDGET_SECONDS"
COST_BUDGET_VAR = "META_V4_DEFAULT_COST_BUDGET_USD"
CATALOGUE_VAR = "META_V4_MODEL_CATALOGUE"
CPU_PRICE_VAR = "META_V4_CPU_PRICE_PER_SECOND"

RUN_KEYS: dict[str, Dimension] = {
    "time_seconds": Dimension.TIME, "cost_usd": Dimension.COST, "attempts": Dimension.ATTEMPTS}
"""A run budget's keys and the ledger each limits."""
TENANT_KEYS: dict[str, tuple[Dimension, Period]] = {
    "cost_usd_per_day": (Dimension.COST, Period.DAY), "cost_usd_per_month": (Dimension.COST, Period.MONTH),
    "tokens_per_day": (Dimension.TOKENS, Period.DAY), "tokens_per_month": (Dimension.TOKENS, Period.MONTH)}
"""A tenant budget's per-period keys and the ledger each limits."""
CONCURRENT_RUNS = "concurrent_runs"
RUN_DEFAULTS = "run"

PROMPT_OVERHEAD_CHARS = 4_000
"""The prompt's fixed text beyond the log tail and the files (system prompt, step, evidence, labels)."""


@dataclass(frozen=True)
class BudgetSettings:
    """The platform level of the budget settings."""

    default_time_seconds: float | None = None
    """``META_V4_DEFAULT_TIME_BUDGET_SECONDS``: a run's time limit (step wall time); None: metered only."""
    default_cost_usd: float | None = None
    """``META_V4_DEFAULT_COST_BUDGET_USD``: a run's cost limit; None: metered only."""
    catalogue: tuple[ModelSpec, ...] = ()
    """``META_V4_MODEL_CATALOGUE``: model names, tiers and prices (USD per million tokens)."""
    cpu_price_per_second: Mapping[str, float] = field(default_factory=dict)
    """``META_V4_CPU_PRICE_PER_SECOND``: USD per CPU-second of a step, by pool (``cpu``, ``io``, ``llm``)."""

    def model(self, name: str) -> ModelSpec | None:
        return next((m for m in self.catalogue if m.name == name), None)

    def run_defaults(self) -> dict[Dimension, float | None]:
        return {Dimension.TIME: self.default_time_seconds, Dimension.COST: self.default_cost_usd}


def _limit(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number (empty: no limit)") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r}: expected a finite number of at least 0")
    return value


def platform_budgets(env: Mapping[str, str]) -> BudgetSettings:
    """The platform level from ``env``; ``ValueError`` naming the variable on a bad value."""
    catalogue: list[ModelSpec] = []
    if raw := env.get(CATALOGUE_VAR, "").strip():
        source = CATALOGUE_VAR
        if raw.startswith("@"):
            path = Path(raw[1:]).expanduser()
            try:
                raw = path.read_text()
            except OSError as err:
                raise ValueError(f"{CATALOGUE_VAR}=@{path}: cannot read it ({err.strerror})") from None
            source = f"{CATALOGUE_VAR} ({path})"
        catalogue = parse_catalogue(raw, source)
    prices: dict[str, float] = {}
    if raw := env.get(CPU_PRICE_VAR, "").strip():
        data = json_value(raw, CPU_PRICE_VAR)
        if not isinstance(data, dict):
            raise ValueError(f"{CPU_PRICE_VAR}: expected a JSON object of pool -> USD per CPU-second")
        prices = {str(pool): number(price, f"{CPU_PRICE_VAR}.{pool}") for pool, price in data.items()}
    return BudgetSettings(default_time_seconds=_limit(env, TIME_BUDGET_VAR),
                          default_cost_usd=_limit(env, COST_BUDGET_VAR), catalogue=tuple(catalogue),
                          cpu_price_per_second=prices)


def _optional_number(value: object, where: str) -> float | None:
    return None if value is None else number(value, where)


def parse_run_budget(data: object, where: str) -> dict[str, float | None]:
    """A run budget (``{"time_seconds": 600, "cost_usd": 0.5, "attempts": 20}``; null: no limit at
    this level); ``ValueError`` naming ``where`` and the key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object with {', '.join(RUN_KEYS)}")
    if unknown := sorted(set(data) - set(RUN_KEYS)):
        raise ValueError(f"{where}: unknown run budget key(s) {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(RUN_KEYS)}")
    return {key: _optional_number(value, f"{where}.{key}") for key, value in data.items()}


def parse_tenant_budget(data: object, where: str) -> dict[str, object]:
    """A tenant budget: per-period limits, ``concurrent_runs`` and ``run`` (its runs' defaults)."""
    known = [*TENANT_KEYS, CONCURRENT_RUNS, RUN_DEFAULTS]
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object with {', '.join(known)}")
    if unknown := sorted(set(data) - set(known)):
        raise ValueError(f"{where}: unknown tenant budget key(s) {', '.join(map(repr, unknown))}; "
                         f"expected {', '.join(known)}")
    out: dict[str, object] = {}
    for key, value in data.items():
        if key == RUN_DEFAULTS:
            out[key] = parse_run_budget(value, f"{where}.{key}")
        elif key == CONCURRENT_RUNS:
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{where}.{key}: expected a whole number of at least 1 (null: the platform's)")
            out[key] = value
        else:
            out[key] = _optional_number(value, f"{where}.{key}")
    return out


@dataclass(frozen=True)
class EffectiveRunBudget:
    """A run's limits and the level each came from (``platform``, ``tenant`` or ``run``)."""

    limits: dict[Dimension, float | None]
    sources: dict[Dimension, str]


def effective_run_budget(platform: BudgetSettings, tenant: Mapping[str, object] | None = None,
                         run: Mapping[str, float | None] | None = None) -> EffectiveRunBudget:
    """Precedence platform -> tenant -> run, per dimension: the most specific level that names it wins."""
    limits: dict[Dimension, float | None] = {d: None for d in RUN_KEYS.values()}
    limits.update(platform.run_defaults())
    sources = {d: "platform" for d in limits}
    tenant_run = (tenant or {}).get(RUN_DEFAULTS)
    for level, values in (("tenant", tenant_run if isinstance(tenant_run, Mapping) else {}), ("run", run or {})):
        for key, value in values.items():
            limits[RUN_KEYS[key]] = value
            sources[RUN_KEYS[key]] = level
    return EffectiveRunBudget(limits, sources)


def tenant_periods(tenant: Mapping[str, object] | None, at: datetime) -> dict[str, dict[Dimension, float | None]]:
    """The tenant's ledgers that ``at`` falls into, by period key (a day's and a month's), with
    their limits (None: metered only)."""
    out: dict[str, dict[Dimension, float | None]] = {}
    for period in Period:
        limits: dict[Dimension, float | None] = {Dimension.COST: None, Dimension.TOKENS: None}
        for key, (dimension, p) in TENANT_KEYS.items():
            value = (tenant or {}).get(key)
            if p is period and isinstance(value, (int, float)):
                limits[dimension] = float(value)
        out[period_key(period, at)] = limits
    return out


@dataclass(frozen=True)
class CallEstimate:
    """What one LLM call may cost at most: what its reservation holds."""

    model: str
    tokens: int
    cost_usd: float
    prompt_tokens: int


def llm_worst_case(model: ModelSpec, *, prompt_chars: int, max_output_tokens: int) -> CallEstimate:
    """The worst case of one call: the prompt counted as one token per character (no tokenizer
    makes more tokens than characters of text) plus the answer's ``max_tokens``."""
    prompt_tokens = prompt_chars + PROMPT_OVERHEAD_CHARS
    return CallEstimate(model=model.name, tokens=prompt_tokens + max_output_tokens,
                        cost_usd=model.worst_case_usd(prompt_tokens, max_output_tokens), prompt_tokens=prompt_tokens)
