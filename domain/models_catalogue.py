"""The model price catalogue, and choosing a model that fits an SLA tier and the money left."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from metabuilder.domain.settings_json import enum_value, json_value, number


class Tier(StrEnum):
    """A model's class in the catalogue, from cheapest to strongest."""

    ECONOMY = "economy"
    STANDARD = "standard"
    PREMIUM = "premium"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One entry of the model price catalogue (a setting's JSON list)."""

    name: str
    tier: Tier
    price_in_per_million: float
    price_out_per_million: float
    context_tokens: int
    endpoint: str = ""
    """The OpenAI-compatible base URL; empty: the platform's ``META_BUILDER_LLM_URL``."""

    def worst_case_usd(self, prompt_tokens: int, max_output_tokens: int) -> float:
        return (prompt_tokens * self.price_in_per_million + max_output_tokens * self.price_out_per_million) / 1e6

    def cost_usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.price_in_per_million + tokens_out * self.price_out_per_million) / 1e6


@dataclass(frozen=True, slots=True)
class ModelChoice:
    model: ModelSpec | None
    """None: no model fits; the LLM rungs are skipped."""
    reason: str
    reserve_usd: float = 0.0
    """The worst case to reserve before the call."""


def choose_model(catalogue: list[ModelSpec], max_tier: Tier, *, prompt_tokens: int, max_output_tokens: int,
                 remaining_usd: float) -> ModelChoice:
    """The strongest model at or below ``max_tier`` whose context holds the prompt and whose worst
    case fits the money left; cheaper tiers are the step down when the budget runs low."""
    needed = prompt_tokens + max_output_tokens
    candidates = sorted((m for m in catalogue if m.tier.rank <= max_tier.rank),
                        key=lambda m: (-m.tier.rank, m.worst_case_usd(prompt_tokens, max_output_tokens), m.name))
    if not candidates:
        return ModelChoice(None, f"the catalogue has no model at or below tier {max_tier.value}")
    too_small = [m.name for m in candidates if m.context_tokens < needed]
    for model in candidates:
        if model.context_tokens < needed:
            continue
        worst = model.worst_case_usd(prompt_tokens, max_output_tokens)
        if worst <= remaining_usd + 1e-12:
            stepped = model.tier is not candidates[0].tier
            why = (f"{model.name} ({model.tier.value}): worst case ${worst:.4f} of ${remaining_usd:.4f} left"
                   + ("; stepped down, a stronger tier does not fit the budget" if stepped else ""))
            return ModelChoice(model, why, worst)
    if len(too_small) == len(candidates):
        return ModelChoice(None, f"no model's context holds {needed} tokens")
    return ModelChoice(None, f"no model's worst case fits the ${max(remaining_usd, 0.0):.4f} left")


def parse_catalogue(text: str, source: str) -> list[ModelSpec]:
    """The model price catalogue: a JSON list of objects with ``name``, ``tier``, ``price_in``
    and ``price_out`` (USD per million tokens), ``context_tokens`` and an optional ``endpoint``.

    Raises ``ValueError`` naming the entry and the field that is wrong.
    """
    data = json_value(text, source)
    if not isinstance(data, list):
        raise ValueError(f"{source}: expected a JSON list of models")
    known = {"name", "tier", "price_in", "price_out", "context_tokens", "endpoint"}
    models: list[ModelSpec] = []
    for i, entry in enumerate(data):
        where = f"{source}[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object")
        if unknown := sorted(set(entry) - known):
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}.name: expected the model's name")
        if name in {m.name for m in models}:
            raise ValueError(f"{where}.name: {name!r} is listed twice")
        context = number(entry.get("context_tokens", 8192), f"{where}.context_tokens", minimum=1)
        models.append(ModelSpec(
            name=name, tier=Tier(enum_value(Tier, entry.get("tier", "standard"), f"{where}.tier")),
            price_in_per_million=number(entry.get("price_in", 0.0), f"{where}.price_in"),
            price_out_per_million=number(entry.get("price_out", 0.0), f"{where}.price_out"),
            context_tokens=int(context), endpoint=str(entry.get("endpoint") or "")))
    return models
