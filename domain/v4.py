"""The v4 settings group (seed 002): the platform level read from the environment, and the
``FEATURE_META_V4_ENABLED`` flag's platform -> tenant -> run precedence (as v3's auto-fix flag).

The circuit breakers' settings (``META_V4_BREAKERS_ENABLED``, ``META_V4_BREAKER_POLICIES``,
``META_V4_BREAKER_ALERT_AFTER_SECONDS``) belong to the group too; they are read with the
breakers (``worker.settings``) and documented with the rest in docs/SETTINGS.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metabuilder.domain.canary import CanarySettings, parse_canary
from metabuilder.domain.pools import parse_weights
from metabuilder.domain.settings_json import json_value
from metabuilder.domain.sla import DEFAULT_SLA, SlaClass, SlaProfile, parse_sla_classes

ENABLED_VAR = "FEATURE_META_V4_ENABLED"
MAX_WORKERS_VAR = "META_V4_MAX_WORKERS"
FAIRNESS_WEIGHTS_VAR = "META_V4_FAIRNESS_WEIGHTS"
SLA_CLASSES_VAR = "META_V4_SLA_CLASSES"

ENABLED_DEFAULTS: dict[str, bool] = {"development": True, "staging": True, "production": False}
"""v4 behaviour per environment: off in production unless switched on (as v3's flag)."""
DEFAULT_MAX_WORKERS = 12
"""Three step pools of four slots each: what a worker process ran before the cap existed."""
MAX_WORKERS_RANGE = (1, 1024)
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class V4Settings:
    """The platform level of the v4 settings."""

    enabled: bool = False
    """``FEATURE_META_V4_ENABLED``: runs get priority and fairness keys (tenant and run may override)."""
    max_workers: int = DEFAULT_MAX_WORKERS
    """``META_V4_MAX_WORKERS``: the most step executions one worker process runs at once, summed
    over the step pools (``cpu``, ``io``, ``llm``) it polls; each pool's activity slots are its own
    count (``--concurrency``) when they fit, else this cap shared out in proportion
    (:func:`domain.pools.share_slots`). Workflow tasks and local bookkeeping activities do not count."""
    fairness_weights: dict[str, float] = field(default_factory=dict)
    """``META_V4_FAIRNESS_WEIGHTS``: tenant -> fairness weight (default 1 each)."""
    sla_classes: dict[SlaClass, SlaProfile] = field(default_factory=lambda: dict(DEFAULT_SLA))
    """``META_V4_SLA_CLASSES``: what Fast, Normal and Thorough mean, over :data:`domain.sla.DEFAULT_SLA`."""
    canary: CanarySettings = field(default_factory=CanarySettings)
    """``FEATURE_META_V4_CANARY_PERCENT`` and ``META_V4_CANARY_*``: the canary between versions (``domain.canary``)."""


def parse_flag(raw: object, where: str) -> bool:
    """A boolean from an env string or a JSON value; ``ValueError`` naming ``where``."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ValueError(f"{where}={raw!r}: expected true or false")


def platform_v4(environment: str, env: Mapping[str, str]) -> V4Settings:
    """The platform level from ``env``; ``ValueError`` naming the variable on a bad value."""
    enabled = ENABLED_DEFAULTS.get(environment, False)
    if (raw := env.get(ENABLED_VAR, "").strip()):
        enabled = parse_flag(raw, ENABLED_VAR)
    max_workers = DEFAULT_MAX_WORKERS
    if (raw := env.get(MAX_WORKERS_VAR, "").strip()):
        low, high = MAX_WORKERS_RANGE
        try:
            max_workers = int(raw)
        except ValueError:
            raise ValueError(f"{MAX_WORKERS_VAR}={raw!r}: expected a whole number of step slots") from None
        if not low <= max_workers <= high:
            raise ValueError(f"{MAX_WORKERS_VAR}={raw!r}: expected a number from {low} to {high}")
    weights: dict[str, float] = {}
    if (raw := env.get(FAIRNESS_WEIGHTS_VAR, "").strip()):
        weights = parse_weights(json_value(raw, FAIRNESS_WEIGHTS_VAR), FAIRNESS_WEIGHTS_VAR)
    sla_classes = parse_sla_classes(env.get(SLA_CLASSES_VAR, ""), SLA_CLASSES_VAR)
    return V4Settings(enabled=enabled, max_workers=max_workers, fairness_weights=weights, sla_classes=sla_classes,
                      canary=parse_canary(env))


@dataclass(frozen=True)
class EffectiveFlag:
    """The v4 flag a run gets, and the level it came from (``platform``, ``tenant`` or ``run``)."""

    enabled: bool
    source: str


def effective_enabled(platform: bool, tenant: bool | None = None, run: bool | None = None) -> EffectiveFlag:
    """Precedence platform -> tenant -> run: the most specific level that sets the flag wins."""
    if run is not None:
        return EffectiveFlag(run, "run")
    if tenant is not None:
        return EffectiveFlag(tenant, "tenant")
    return EffectiveFlag(platform, "platform")
