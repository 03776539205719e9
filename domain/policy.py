"""Self-healing policy: per-class retries and backoff, attempt budgets, and the auto-fix flags.

Everything here is pure data and arithmetic, shared by the workflow (which keeps the budgets)
and the step activity (which turns a classified failure into a typed, possibly retryable error).

Counting: an *auto-fix attempt* is one retry of a step, or one repair action on it (an unchanged
re-run to check for a flake, an applied patch, a plan change). The first run of a step is not an
attempt. A run may spend ``max_total_attempts``; one step ``max_per_step_attempts`` of those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from metabuilder.domain.taxonomy import FailureType

DEFAULT_MAX_RETRIES: dict[str, int] = {
    FailureType.TRANSIENT: 3, FailureType.INFRA: 2, FailureType.TEST_ASSERT: 0, FailureType.LINT: 0,
    FailureType.TYPECHECK: 0, FailureType.SECURITY: 0, FailureType.POLICY: 0, FailureType.RUNTIME: 1,
    FailureType.SCHEMA_MIGRATION: 0, FailureType.RATE_LIMIT: 3, FailureType.UNKNOWN: 2,
}
"""Seed 001: how many times a failure of each class is retried as it is."""
DEFAULT_BACKOFF_MULTIPLIER: dict[str, float] = {
    FailureType.TRANSIENT: 2.0, FailureType.INFRA: 1.5, FailureType.RATE_LIMIT: 2.0,
    FailureType.RUNTIME: 1.0, FailureType.UNKNOWN: 1.5,
}
"""Seed 001: growth of the delay from one retry to the next (1.0 for classes not listed)."""


class PolicyError(ValueError):
    """A setting or override with a value the policy cannot use; the message names it."""


@dataclass(frozen=True)
class AutofixPolicy:
    """Seed 001's ``RetryPolicy`` (named apart from Temporal's ``RetryPolicy``, which the workflows
    build from it): per-class retries and backoff, the attempt budgets and optional jitter."""

    max_retries: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_RETRIES))
    backoff_multiplier: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BACKOFF_MULTIPLIER))
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 60.0
    max_total_attempts: int = 6
    max_per_step_attempts: int = 3
    jitter_ratio: float = 0.0
    """0 for exact delays; 0.2 spreads each delay over +-20% (never above the cap)."""

    def retries_for(self, failure_type: FailureType | str) -> int:
        return self.max_retries.get(str(failure_type), 0)

    def delay(self, failure_type: FailureType | str, retry_number: int, *,
              retry_after: float | None = None, random_unit: float = 0.5) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry).

        ``base x multiplier^(n-1)``, capped at ``max_delay_seconds``, spread by the jitter
        (``random_unit`` in [0, 1), 0.5 meaning none). A RATE_LIMIT failure whose log asked for
        ``retry_after`` seconds never waits less than that, even above the cap.
        """
        multiplier = self.backoff_multiplier.get(str(failure_type), 1.0)
        seconds = min(self.base_delay_seconds * multiplier ** max(retry_number - 1, 0), self.max_delay_seconds)
        if self.jitter_ratio:
            seconds = min(seconds * (1 + self.jitter_ratio * (2 * random_unit - 1)), self.max_delay_seconds)
        if str(failure_type) == FailureType.RATE_LIMIT and retry_after:
            seconds = max(seconds, retry_after)
        return round(seconds, 3)


@dataclass
class AttemptBudget:
    """The seeds' ``RetryState`` of a run: its attempt budgets and what it spent of them. Kept by
    its workflow (as ``retry_state`` in payloads) and stored in ``retry_states``."""

    max_total_attempts: int
    max_per_step_attempts: int
    total_attempts: int = 0
    per_step_attempts: dict[str, int] = field(default_factory=dict)
    attempt_counter: int = 0
    """Every execution of any step's command, first runs included."""
    last_backoff_seconds: float | None = None

    @classmethod
    def for_policy(cls, policy: AutofixPolicy) -> AttemptBudget:
        return cls(max_total_attempts=policy.max_total_attempts, max_per_step_attempts=policy.max_per_step_attempts)

    def remaining(self, step: str) -> int:
        """Auto-fix attempts this step may still spend: the smaller of its own and the run's."""
        return max(0, min(self.max_per_step_attempts - self.per_step_attempts.get(step, 0),
                          self.max_total_attempts - self.total_attempts))

    def record_execution(self, step: str, temporal_attempts: int) -> None:
        """Count one execution of a step that took ``temporal_attempts`` Temporal attempts: each
        beyond the first was a retry and spends budget."""
        self.attempt_counter += temporal_attempts
        self.charge(step, temporal_attempts - 1)

    def spend(self, step: str) -> bool:
        """Charge one attempt if the budget allows it; whether it did."""
        if not self.remaining(step):
            return False
        self.charge(step)
        return True

    def charge(self, step: str, attempts: int = 1) -> None:
        """Spend ``attempts``; never beyond the budget (callers check :meth:`remaining` first)."""
        attempts = min(attempts, self.remaining(step))
        self.total_attempts += attempts
        self.per_step_attempts[step] = self.per_step_attempts.get(step, 0) + attempts


# --- feature flags ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AutofixSettings:
    """The seeds' auto-fix flags: ``FEATURE_META_V3_AUTOFIX`` and the three ``META_V3_*`` limits."""

    enabled: bool
    max_total_attempts: int
    max_per_step_attempts: int
    backoff_cap_seconds: float


ENVIRONMENT_DEFAULTS: dict[str, AutofixSettings] = {
    "development": AutofixSettings(enabled=True, max_total_attempts=10, max_per_step_attempts=5,
                                   backoff_cap_seconds=60.0),
    "staging": AutofixSettings(enabled=True, max_total_attempts=6, max_per_step_attempts=3,
                               backoff_cap_seconds=60.0),
    "production": AutofixSettings(enabled=False, max_total_attempts=6, max_per_step_attempts=3,
                                  backoff_cap_seconds=60.0),
}
"""Seed 001's table of defaults per environment."""

ENV_VARS: dict[str, str] = {
    "enabled": "FEATURE_META_V3_AUTOFIX",
    "max_total_attempts": "META_V3_MAX_TOTAL_ATTEMPTS",
    "max_per_step_attempts": "META_V3_MAX_PER_STEP_ATTEMPTS",
    "backoff_cap_seconds": "META_V3_BACKOFF_CAP_SECONDS",
}
"""Setting -> platform environment variable."""

_LIMITS: dict[str, tuple[float, float]] = {
    "max_total_attempts": (0, 100), "max_per_step_attempts": (0, 50), "backoff_cap_seconds": (0.001, 86400),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _value(key: str, raw: object, where: str) -> bool | int | float:
    """One setting's value from an env string or a JSON value; ``PolicyError`` naming ``where``."""
    if key == "enabled":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise PolicyError(f"{where}={raw!r}: expected true or false")
    low, high = _LIMITS[key]
    try:
        number = float(raw) if not isinstance(raw, bool) else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = None
    if number is None or (key != "backoff_cap_seconds" and number != int(number)):
        kind = "a number of seconds" if key == "backoff_cap_seconds" else "a whole number"
        raise PolicyError(f"{where}={raw!r}: expected {kind}")
    if not low <= number <= high:
        raise PolicyError(f"{where}={raw!r}: expected a number from {low:g} to {high:g}")
    return number if key == "backoff_cap_seconds" else int(number)


def platform_settings(environment: str, env: Mapping[str, str]) -> AutofixSettings:
    """The platform level: the environment's defaults, overridden by the ``ENV_VARS`` that are set."""
    base = ENVIRONMENT_DEFAULTS[environment]
    changes = {key: _value(key, env[var], var) for key, var in ENV_VARS.items() if env.get(var, "").strip()}
    return replace(base, **changes)  # type: ignore[arg-type]


def parse_overrides(data: Mapping[str, object], where: str) -> dict[str, bool | int | float]:
    """Validate tenant or run overrides (``{"enabled": false, "max_total_attempts": 8}``)."""
    unknown = sorted(set(data) - set(ENV_VARS))
    if unknown:
        raise PolicyError(f"{where}: unknown setting {', '.join(map(repr, unknown))}; "
                          f"expected some of {', '.join(ENV_VARS)}")
    return {key: _value(key, value, f"{where}.{key}") for key, value in data.items()}


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings a run gets, and for each one the level it came from."""

    settings: AutofixSettings
    sources: dict[str, str]
    """Setting -> ``platform``, ``tenant`` or ``run``."""

    def policy(self) -> AutofixPolicy:
        return AutofixPolicy(max_delay_seconds=self.settings.backoff_cap_seconds,
                           max_total_attempts=self.settings.max_total_attempts,
                           max_per_step_attempts=self.settings.max_per_step_attempts)


def effective_settings(platform: AutofixSettings, tenant: Mapping[str, object] | None = None,
                       run: Mapping[str, object] | None = None) -> EffectiveSettings:
    """Precedence platform -> tenant -> run: the most specific level that sets a value wins."""
    values: dict[str, object] = {key: getattr(platform, key) for key in ENV_VARS}
    sources = dict.fromkeys(ENV_VARS, "platform")
    for level, overrides in (("tenant", tenant), ("run", run)):
        for key, value in parse_overrides(overrides or {}, level).items():
            values[key], sources[key] = value, level
    return EffectiveSettings(AutofixSettings(**values), sources)  # type: ignore[arg-type]
