"""The seeds' settings body (``autofix_enabled``...) <-> the domain's setting names (``enabled``...)."""

from __future__ import annotations

from typing import Any

from metabuilder.api.schemas import SettingsIn, SettingsValues
from metabuilder.domain.policy import AutofixSettings

_TO_DOMAIN = {"autofix_enabled": "enabled"}
_TO_API = {v: k for k, v in _TO_DOMAIN.items()}


def overrides_of(body: SettingsIn | None) -> dict[str, Any]:
    """The overrides a body sets, in the domain's names (fields left out are not overrides)."""
    if body is None:
        return {}
    return {_TO_DOMAIN.get(k, k): v for k, v in body.model_dump(exclude_none=True).items()}


def api_names(mapping: dict[str, Any]) -> dict[str, Any]:
    return {_TO_API.get(k, k): v for k, v in mapping.items() if k != "sources"}


def values_of(settings: AutofixSettings) -> SettingsValues:
    return SettingsValues(autofix_enabled=settings.enabled, max_total_attempts=settings.max_total_attempts,
                          max_per_step_attempts=settings.max_per_step_attempts,
                          backoff_cap_seconds=settings.backoff_cap_seconds)
