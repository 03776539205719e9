"""SLA classes (Fast, Normal, Thorough): what each means for a run, and how close a run is to its deadline."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from metabuilder.domain.models_catalogue import Tier
from metabuilder.domain.settings_json import enum_value, json_value, number


class SlaClass(StrEnum):
    FAST = "fast"
    NORMAL = "normal"
    THOROUGH = "thorough"


@dataclass(frozen=True, slots=True)
class SlaProfile:
    """What an SLA class means (a setting overrides the defaults field by field)."""

    priority: str
    """``high``, ``normal`` or ``low``: the Temporal priority of the run's work."""
    time_budget_seconds: float
    model_tier: Tier
    repair_depth: int
    """How many rungs of the ladder past the retries may be climbed (patch, re-plan, rollback)."""
    candidates: int = 1
    """Patches generated and verified in parallel per LLM patch rung (best of N)."""


DEFAULT_SLA: dict[SlaClass, SlaProfile] = {
    SlaClass.FAST: SlaProfile("high", 600.0, Tier.ECONOMY, 1),
    SlaClass.NORMAL: SlaProfile("normal", 1800.0, Tier.STANDARD, 3),
    SlaClass.THOROUGH: SlaProfile("low", 7200.0, Tier.PREMIUM, 3, candidates=3),
}


class SlaState(StrEnum):
    OK = "ok"
    WARNING = "warning"
    """Past :data:`WARN_FRACTION` of the deadline."""
    VIOLATED = "violated"


WARN_FRACTION = 0.8


def sla_state(elapsed_seconds: float, budget_seconds: float | None) -> SlaState:
    if budget_seconds is None or budget_seconds <= 0:
        return SlaState.OK
    fraction = elapsed_seconds / budget_seconds
    if fraction >= 1.0:
        return SlaState.VIOLATED
    return SlaState.WARNING if fraction >= WARN_FRACTION else SlaState.OK


def parse_sla_classes(text: str, source: str) -> dict[SlaClass, SlaProfile]:
    """The SLA classes over :data:`DEFAULT_SLA`: ``{"fast": {"time_budget_seconds": 300}}``."""
    profiles = dict(DEFAULT_SLA)
    if not text.strip():
        return profiles
    data = json_value(text, source)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object of SLA class -> fields")
    fields = set(SlaProfile.__dataclass_fields__)
    for name, given in data.items():
        cls = SlaClass(enum_value(SlaClass, name, source))
        where = f"{source}.{cls.value}"
        if not isinstance(given, dict):
            raise ValueError(f"{where}: expected an object of fields")
        if unknown := sorted(set(given) - fields):
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
        values: dict[str, object] = {}
        for key, value in given.items():
            if key == "priority":
                if value not in ("high", "normal", "low"):
                    raise ValueError(f"{where}.priority: {value!r} is not one of high, normal, low")
                values[key] = value
            elif key == "model_tier":
                values[key] = Tier(enum_value(Tier, value, f"{where}.model_tier"))
            elif key in ("repair_depth", "candidates"):
                count = number(value, f"{where}.{key}", minimum=0 if key == "repair_depth" else 1)
                if count != int(count) or count > 16:
                    raise ValueError(f"{where}.{key}: expected a whole number up to 16, got {value!r}")
                values[key] = int(count)
            else:
                values[key] = number(value, f"{where}.{key}", minimum=1)
        profiles[cls] = replace(profiles[cls], **values)  # type: ignore[arg-type]
    return profiles


@dataclass(frozen=True, slots=True)
class RunSla:
    """A run's SLA class and what it means, resolved when the run was submitted (in its input)."""

    sla_class: SlaClass
    priority: str
    time_budget_seconds: float
    model_tier: Tier
    repair_depth: int
    candidates: int = 1
    source: str = "run"
    """Where the class came from: ``run`` (the API's or CLI's ``sla``) or ``plan`` (its ``sla:``)."""

    @classmethod
    def of(cls, sla_class: SlaClass, profiles: dict[SlaClass, SlaProfile] | None = None,
           source: str = "run") -> RunSla:
        p = (profiles or DEFAULT_SLA)[sla_class]
        return cls(sla_class, p.priority, p.time_budget_seconds, p.model_tier, p.repair_depth, p.candidates, source)

    def as_dict(self) -> dict[str, object]:
        """As the run's settings store and show it."""
        return {"class": self.sla_class.value, "priority": self.priority,
                "time_budget_seconds": self.time_budget_seconds, "model_tier": self.model_tier.value,
                "repair_depth": self.repair_depth, "candidates": self.candidates, "source": self.source}


def parse_sla(value: object, where: str) -> SlaClass:
    """``fast``, ``normal`` or ``thorough``; ``ValueError`` naming ``where``."""
    try:
        return SlaClass(str(value).strip().lower())
    except ValueError:
        raise ValueError(f"{where}={value!r}: expected one of fast, normal, thorough") from None


LADDER_RUNGS_BY_DEPTH = ("patch", "replan", "rollback")
"""The rungs past the retries and the flake check, in climbing order: depth ``n`` allows the first ``n``."""


def rungs_allowed(repair_depth: int) -> tuple[str, ...]:
    """The rungs a run of this depth may climb (the flake check and the escalation always may)."""
    return LADDER_RUNGS_BY_DEPTH[:max(0, repair_depth)]


def smallest_passing(candidates: list[tuple[int, bool, int]]) -> int | None:
    """Of ``(index, passed, changed lines)``, the index of the passing one with the fewest changed
    lines (the lower index on a tie); None when none passed."""
    passing = sorted((lines, index) for index, passed, lines in candidates if passed)
    return passing[0][1] if passing else None


def diff_size(diff: str) -> int:
    """Lines a unified diff adds or removes (headers not counted)."""
    return sum(1 for line in diff.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---")))
