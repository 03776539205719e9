"""Retry policy, budgets and auto-fix settings (pure rules, no Temporal)."""

from __future__ import annotations

import pytest

from metabuilder.domain.policy import (
    ENVIRONMENT_DEFAULTS,
    AttemptBudget,
    AutofixPolicy,
    PolicyError,
    effective_settings,
    platform_settings,
)
from metabuilder.domain.taxonomy import FailureType


def test_seed_table_is_the_default() -> None:
    policy = AutofixPolicy()
    assert {t: policy.retries_for(t) for t in FailureType} == {
        FailureType.TRANSIENT: 3, FailureType.INFRA: 2, FailureType.TEST_ASSERT: 0, FailureType.LINT: 0,
        FailureType.TYPECHECK: 0, FailureType.SECURITY: 0, FailureType.POLICY: 0, FailureType.RUNTIME: 1,
        FailureType.SCHEMA_MIGRATION: 0, FailureType.RATE_LIMIT: 3, FailureType.UNKNOWN: 2}
    assert (policy.base_delay_seconds, policy.max_delay_seconds) == (1.0, 60.0)
    assert (policy.max_total_attempts, policy.max_per_step_attempts) == (6, 3)


@pytest.mark.parametrize(("failure_type", "delays"), [
    (FailureType.TRANSIENT, [1, 2, 4, 8, 16, 32, 60, 60]),
    (FailureType.INFRA, [1, 1.5, 2.25, 3.375]),
    (FailureType.RUNTIME, [1, 1, 1]),
    (FailureType.UNKNOWN, [1, 1.5, 2.25]),
])
def test_per_class_backoff_is_capped(failure_type: FailureType, delays: list[float]) -> None:
    policy = AutofixPolicy()
    assert [policy.delay(failure_type, n) for n in range(1, len(delays) + 1)] == delays


def test_retry_after_is_honoured_for_rate_limits_even_above_the_cap() -> None:
    policy = AutofixPolicy()
    assert policy.delay(FailureType.RATE_LIMIT, 1, retry_after=90) == 90
    assert policy.delay(FailureType.RATE_LIMIT, 3, retry_after=0.5) == 4  # never shorter than the backoff
    assert policy.delay(FailureType.TRANSIENT, 1, retry_after=90) == 1  # only rate limits carry Retry-After


def test_jitter_stays_within_its_ratio_and_the_cap() -> None:
    policy = AutofixPolicy(jitter_ratio=0.2)
    assert policy.delay(FailureType.TRANSIENT, 3, random_unit=0.0) == pytest.approx(3.2)
    assert policy.delay(FailureType.TRANSIENT, 3, random_unit=0.999) == pytest.approx(4.8, abs=0.01)
    assert policy.delay(FailureType.TRANSIENT, 10, random_unit=0.999) == 60


def test_budget_is_the_smaller_of_step_and_run_and_never_overspent() -> None:
    state = AttemptBudget(max_total_attempts=4, max_per_step_attempts=3)
    state.charge("a", 5)
    assert state.per_step_attempts == {"a": 3} and state.remaining("a") == 0 and state.remaining("b") == 1
    state.charge("b", 2)
    assert state.total_attempts == 4 and state.remaining("b") == 0


def test_environment_defaults_and_env_overrides() -> None:
    assert platform_settings("production", {}) == ENVIRONMENT_DEFAULTS["production"]
    assert not ENVIRONMENT_DEFAULTS["production"].enabled
    assert ENVIRONMENT_DEFAULTS["development"].max_total_attempts == 10
    got = platform_settings("production", {"FEATURE_META_V3_AUTOFIX": "true", "META_V3_BACKOFF_CAP_SECONDS": "30"})
    assert got.enabled and got.backoff_cap_seconds == 30.0 and got.max_total_attempts == 6


@pytest.mark.parametrize(("var", "value", "message"), [
    ("FEATURE_META_V3_AUTOFIX", "maybe", "FEATURE_META_V3_AUTOFIX='maybe': expected true or false"),
    ("META_V3_MAX_TOTAL_ATTEMPTS", "six", "META_V3_MAX_TOTAL_ATTEMPTS='six': expected a whole number"),
    ("META_V3_MAX_PER_STEP_ATTEMPTS", "2.5", "META_V3_MAX_PER_STEP_ATTEMPTS='2.5': expected a whole number"),
    ("META_V3_BACKOFF_CAP_SECONDS", "-1", "META_V3_BACKOFF_CAP_SECONDS='-1': expected a number from 0.001 to 86400"),
])
def test_bad_values_are_named(var: str, value: str, message: str) -> None:
    with pytest.raises(PolicyError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        platform_settings("staging", {var: value})


def test_precedence_platform_tenant_run() -> None:
    platform = ENVIRONMENT_DEFAULTS["staging"]
    eff = effective_settings(platform, {"enabled": False, "max_total_attempts": 8}, {"enabled": True})
    assert eff.settings.enabled and eff.settings.max_total_attempts == 8 and eff.settings.max_per_step_attempts == 3
    assert eff.sources == {"enabled": "run", "max_total_attempts": "tenant", "max_per_step_attempts": "platform",
                           "backoff_cap_seconds": "platform"}
    assert eff.policy().max_total_attempts == 8
    with pytest.raises(PolicyError, match="tenant: unknown setting 'retries'"):
        effective_settings(platform, {"retries": 3})
