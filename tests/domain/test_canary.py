"""The canary's statistics and recommendation (pure), checked against exhaustive enumeration
and published examples."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from metabuilder.domain.canary import (
    CanarySettings,
    Recommendation,
    Sample,
    build_id_of,
    check_build_id,
    check_deployment_name,
    compare,
    fisher_exact,
    mann_whitney,
    median,
    parse_canary,
)


def fisher_by_enumeration(a: int, b: int, c: int, d: int) -> float:
    """Every table with the table's margins, by its exact hypergeometric probability."""
    r1, c1, n = a + b, a + c, a + b + c + d
    probs = {x: Fraction(math.comb(r1, x) * math.comb(n - r1, c1 - x), math.comb(n, c1))
             for x in range(max(0, c1 - (n - r1)), min(r1, c1) + 1)}
    return float(sum(p for p in probs.values() if p <= probs[a]))


@pytest.mark.parametrize("table", [(1, 9, 11, 3), (3, 1, 1, 3), (0, 10, 10, 0), (5, 5, 5, 5), (0, 0, 3, 4),
                                   (7, 2, 3, 8), (12, 0, 0, 1)])
def test_fisher_matches_enumeration(table: tuple[int, int, int, int]) -> None:
    assert fisher_exact(*table) == pytest.approx(fisher_by_enumeration(*table), rel=1e-12)


def test_fisher_published_values() -> None:
    # The dieting example of Fisher's exact test (Wikipedia): two-sided p = 0.002759.
    assert fisher_exact(1, 9, 11, 3) == pytest.approx(0.002759, abs=5e-7)
    # The lady tasting tea, 3 of 4 cups right: p = 0.4857 two-sided.
    assert fisher_exact(3, 1, 1, 3) == pytest.approx(0.4857, abs=5e-5)
    assert fisher_exact(5, 5, 5, 5) == 1.0
    assert fisher_exact(0, 0, 0, 0) == 1.0
    with pytest.raises(ValueError):
        fisher_exact(-1, 0, 0, 0)


def exact_mann_whitney_p(x: list[float], y: list[float]) -> float:
    """The permutation distribution of U over every split of the pooled values (no ties)."""
    pooled = x + y
    n1 = len(x)
    observed = mann_whitney(x, y).u
    mean = n1 * len(y) / 2
    us = []
    for idx in itertools.combinations(range(len(pooled)), n1):
        a = [pooled[i] for i in idx]
        b = [pooled[i] for i in range(len(pooled)) if i not in idx]
        us.append(sum((p > q) + 0.5 * (p == q) for p in a for q in b))
    return sum(abs(u - mean) >= abs(observed - mean) for u in us) / len(us)


def test_mann_whitney_u_counts_wins() -> None:
    assert mann_whitney([1, 2, 3], [4, 5, 6]).u == 0
    assert mann_whitney([4, 5, 6], [1, 2, 3]).u == 9
    assert mann_whitney([1, 2], [2, 3]).u == 0.5  # a tie counts half
    assert mann_whitney([2, 2, 2], [2, 2]).p_value == 1.0
    with pytest.raises(ValueError):
        mann_whitney([], [1.0])


@pytest.mark.parametrize(("x", "y"), [([1.1, 2.3, 3.2, 4.8, 5.0], [6.1, 7.2, 8.0, 9.9, 10.5]),
                                      ([1.0, 5.0, 9.0, 2.5], [3.0, 4.0, 6.0, 7.0, 8.0]),
                                      ([0.3, 0.9, 1.4, 2.2, 3.1, 4.0], [1.0, 2.0, 3.5, 5.0, 6.5, 7.5])])
def test_mann_whitney_p_is_close_to_the_exact_permutation_p(x: list[float], y: list[float]) -> None:
    # The normal approximation with the continuity correction, against the exact distribution.
    assert mann_whitney(x, y).p_value == pytest.approx(exact_mann_whitney_p(x, y), abs=0.02)


def test_median() -> None:
    assert median([]) is None
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 2, 3]) == 2.5


def samples(version: str, ok: int, bad: int, seconds: float = 10.0, cost: float | None = 0.0) -> list[Sample]:
    return ([Sample(version, "succeeded", seconds + i * 0.1, 2, 1, cost) for i in range(ok)]
            + [Sample(version, "rolled_back", seconds + i * 0.1, 3, 1, cost) for i in range(bad)])


def test_too_few_samples_continues_and_says_how_many() -> None:
    c = compare("a", samples("a", 5, 0), "b", samples("b", 0, 3), CanarySettings(min_samples=10))
    assert c.recommendation is Recommendation.CONTINUE
    assert "a has 5 of 10" in c.reasons[0] and "b has 3 of 10" in c.reasons[0]
    assert c.success_p_value is None


def test_a_significant_drop_in_success_rate_rolls_back() -> None:
    c = compare("a", samples("a", 10, 0), "b", samples("b", 2, 8), CanarySettings(min_samples=10))
    assert c.recommendation is Recommendation.ROLLBACK
    assert c.checks["success_rate"] == "regressed"
    assert c.success_p_value is not None and c.success_p_value < 0.001
    assert "success rate 20% against 100%" in c.reasons[0]
    assert (c.current.success_rate, c.candidate.success_rate, c.candidate.runs) == (1.0, 0.2, 10)


def test_a_small_difference_is_not_a_regression_and_promotes() -> None:
    c = compare("a", samples("a", 19, 1), "b", samples("b", 18, 2), CanarySettings(min_samples=20))
    assert c.recommendation is Recommendation.PROMOTE
    assert c.checks == {"success_rate": "ok", "duration": "ok", "cost": "ok"}


def test_a_slower_candidate_rolls_back_and_a_faster_one_does_not() -> None:
    settings = CanarySettings(min_samples=10)
    slow = compare("a", samples("a", 10, 0, seconds=10), "b", samples("b", 10, 0, seconds=20), settings)
    assert slow.recommendation is Recommendation.ROLLBACK and slow.checks["duration"] == "regressed"
    fast = compare("a", samples("a", 10, 0, seconds=20), "b", samples("b", 10, 0, seconds=10), settings)
    assert fast.recommendation is Recommendation.PROMOTE and fast.checks["duration"] == "ok"


def test_a_dearer_candidate_rolls_back_and_unknown_costs_are_said() -> None:
    settings = CanarySettings(min_samples=10)
    cur = [Sample("a", "succeeded", 10.0, 1, 1, 0.01 + i / 1000) for i in range(10)]
    new = [Sample("b", "succeeded", 10.0, 1, 1, 0.05 + i / 1000) for i in range(10)]
    dear = compare("a", cur, "b", new, settings)
    assert dear.recommendation is Recommendation.ROLLBACK and dear.checks["cost"] == "regressed"
    unknown = compare("a", samples("a", 10, 0, cost=None), "b", samples("b", 10, 0, cost=None), settings)
    assert unknown.checks["cost"] == "unknown" and unknown.recommendation is Recommendation.PROMOTE


def test_settings_parse_and_refuse_bad_values_naming_the_variable() -> None:
    assert parse_canary({}) == CanarySettings()
    s = parse_canary({"FEATURE_META_V4_CANARY_PERCENT": "50", "META_V4_CANARY_MIN_SAMPLES": "30",
                      "META_V4_CANARY_ALPHA": "0.01", "META_V4_CANARY_AUTO_ACT": "true"})
    assert (s.percent, s.min_samples, s.alpha, s.auto_act) == (50, 30, 0.01, True)
    for name, value in [("FEATURE_META_V4_CANARY_PERCENT", "101"), ("FEATURE_META_V4_CANARY_PERCENT", "half"),
                        ("META_V4_CANARY_MIN_SAMPLES", "0"), ("META_V4_CANARY_ALPHA", "nan"),
                        ("META_V4_CANARY_AUTO_ACT", "maybe"), ("META_V4_CANARY_DURATION_TOLERANCE", "-1")]:
        with pytest.raises(ValueError, match=name):
            parse_canary({name: value})


def test_build_ids_and_deployment_names() -> None:
    assert build_id_of("1.4.0", "3f2a9c1d0e12") == "1.4.0+g3f2a9c1d0e12"
    assert build_id_of("0+unknown", None) == "0+unknown"
    assert build_id_of("1.0 beta", None) == "1.0-beta"
    assert check_deployment_name("meta-builder", "X") == "meta-builder"
    with pytest.raises(ValueError, match="no '.'"):
        check_deployment_name("meta.builder", "META_BUILDER_DEPLOYMENT_NAME")
    with pytest.raises(ValueError, match="META_BUILDER_BUILD_ID"):
        check_build_id("a b", "META_BUILDER_BUILD_ID")
