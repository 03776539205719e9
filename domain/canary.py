"""The canary between orchestrator versions (seed 002 section 5): the pure part.

Workers run as versions of one Temporal Worker Deployment; a candidate version gets a share of
new runs through Temporal's ramping, and each run stays pinned to the version it started on.
Every finished run leaves a sample (version, outcome, duration, attempts, repairs, cost). This
module compares the candidate's samples with the current version's and recommends what to do:

- success rate: Fisher's exact test on the 2x2 table (exact at any sample size, where the
  two-proportion z-test needs large counts);
- duration and cost: the Mann-Whitney U test (no normality assumed: run durations are skewed);
- a minimum sample size per version before anything but "continue" is said.

scipy is not a dependency of Meta-Builder and pulling it in (tens of MB) for two tests is not
worth it: both are a few lines here, tested against values computed by exhaustive enumeration
and against published examples (``tests/domain/test_canary.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

DEPLOYMENT_NAME = "meta-builder"
"""The Worker Deployment of Meta-Builder's workers (``META_BUILDER_DEPLOYMENT_NAME`` may name another)."""

PERCENT_VAR = "FEATURE_META_V4_CANARY_PERCENT"
MIN_SAMPLES_VAR = "META_V4_CANARY_MIN_SAMPLES"
ALPHA_VAR = "META_V4_CANARY_ALPHA"
AUTO_ACT_VAR = "META_V4_CANARY_AUTO_ACT"
DURATION_TOLERANCE_VAR = "META_V4_CANARY_DURATION_TOLERANCE"
COST_TOLERANCE_VAR = "META_V4_CANARY_COST_TOLERANCE"

SUCCEEDED = "succeeded"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
_BUILD_ID = re.compile(r"^[A-Za-z0-9_.+-]{1,200}$")


class Recommendation(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    CONTINUE = "continue"


@dataclass(frozen=True)
class CanarySettings:
    """The v4 canary settings (docs/SETTINGS.md, the v4 group)."""

    percent: int = 0
    """``FEATURE_META_V4_CANARY_PERCENT``: the share of new runs `metabuilder canary ramp` sends to
    the candidate (0 to 100; 0: no canary)."""
    min_samples: int = 20
    """``META_V4_CANARY_MIN_SAMPLES``: finished runs each version needs before promote or rollback."""
    alpha: float = 0.05
    """``META_V4_CANARY_ALPHA``: the significance level of the tests."""
    auto_act: bool = False
    """``META_V4_CANARY_AUTO_ACT``: act on the recommendation (promote, or ramp to 0) on its own."""
    duration_tolerance: float = 0.2
    """``META_V4_CANARY_DURATION_TOLERANCE``: a candidate slower than this share (0.2: 20 %) in median,
    significantly, is a regression."""
    cost_tolerance: float = 0.2
    """``META_V4_CANARY_COST_TOLERANCE``: the same for the mean cost of a run."""


@dataclass(frozen=True)
class DeploymentSettings:
    """Which Worker Deployment version a process's workers are (``worker.settings``)."""

    versioning: bool = False
    """``META_BUILDER_WORKER_VERSIONING``: poll as a version of the deployment, new workflows pinned
    to the version they start on. Off: unversioned workers (every run goes to whichever polls)."""
    name: str = DEPLOYMENT_NAME
    """``META_BUILDER_DEPLOYMENT_NAME``."""
    build_id: str | None = None
    """``META_BUILDER_BUILD_ID``; None: :func:`build_id_of` the package version and commit."""
    drill_fail_patch: bool = False
    """``META_V4_CANARY_DRILL_FAIL_PATCH``: a drill's deliberate regression, this worker's patch rung
    fails (proposes nothing); refused in production."""


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float, *, whole: bool) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"{name}={raw!r}: expected {kind} from {low:g} to {high:g}") from None
    if not low <= value <= high or (not whole and math.isnan(value)):
        raise ValueError(f"{name}={raw!r}: expected a number from {low:g} to {high:g}")
    return value


def parse_canary(env: Mapping[str, str]) -> CanarySettings:
    """The canary settings from ``env``; ``ValueError`` naming the variable on a bad value."""
    auto = (env.get(AUTO_ACT_VAR) or "").strip().lower()
    if auto and auto not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{AUTO_ACT_VAR}={auto!r}: expected true or false")
    return CanarySettings(
        percent=int(_number(env, PERCENT_VAR, 0, 0, 100, whole=True)),
        min_samples=int(_number(env, MIN_SAMPLES_VAR, 20, 1, 100_000, whole=True)),
        alpha=_number(env, ALPHA_VAR, 0.05, 0.0001, 0.5, whole=False),
        auto_act=auto in ("1", "true", "yes", "on"),
        duration_tolerance=_number(env, DURATION_TOLERANCE_VAR, 0.2, 0.0, 10.0, whole=False),
        cost_tolerance=_number(env, COST_TOLERANCE_VAR, 0.2, 0.0, 10.0, whole=False))


def check_deployment_name(name: str, where: str) -> str:
    """A Worker Deployment name: letters, digits, ``-`` and ``_`` (Temporal keeps ``.`` to join it
    with the build id); ``ValueError`` naming ``where``."""
    if not _NAME.match(name):
        raise ValueError(f"{where}={name!r}: expected letters, digits, '-' or '_' (no '.'), at most 200")
    return name


def check_build_id(build_id: str, where: str) -> str:
    if not _BUILD_ID.match(build_id):
        raise ValueError(f"{where}={build_id!r}: expected letters, digits and . _ + - only, at most 200")
    return build_id


def build_id_of(package_version: str, commit: str | None) -> str:
    """The build id of a worker: the package version and, when known, the commit
    (``1.4.0+g3f2a9c1d0e12``); characters a build id may not hold become ``-``."""
    text = f"{package_version}+g{commit}" if commit else package_version
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)[:200]


@dataclass(frozen=True)
class Sample:
    """One finished run on one version."""

    version: str
    outcome: str
    """The run's final status (``succeeded``, ``failed``, ``rolled_back``...)."""
    duration_seconds: float
    attempts: int = 0
    repairs: int = 0
    cost_usd: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == SUCCEEDED


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p value of Fisher's exact test on the table ``[[a, b], [c, d]]``: the sum of the
    probabilities of every table with the same margins that is no more likely than this one."""
    if min(a, b, c, d) < 0:
        raise ValueError("a contingency table holds counts >= 0")
    row1, col1, n = a + b, a + c, a + b + c + d
    if n == 0:
        return 1.0
    low, high = max(0, col1 - (n - row1)), min(row1, col1)
    total = math.comb(n, col1)

    def weight(x: int) -> int:
        return math.comb(row1, x) * math.comb(n - row1, col1 - x)

    observed = weight(a)
    # Exact integer arithmetic: ties in probability are ties, not rounding accidents.
    tail = sum(w for x in range(low, high + 1) if (w := weight(x)) <= observed)
    return min(1.0, tail / total)


def _ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks of ``values`` (1-based, ties averaged) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@dataclass(frozen=True)
class MannWhitney:
    u: float
    """U of the first sample: how often one of its values beats one of the second's (ties half)."""
    p_value: float
    """Two-sided, from the normal approximation with the tie and continuity corrections."""


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    """The Mann-Whitney U test of ``x`` against ``y`` (two-sided)."""
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("the Mann-Whitney test needs at least one value in each sample")
    ranks, ties = _ranks([*x, *y])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    n = n1 + n2
    mean = n1 * n2 / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:  # every value equal: nothing tells the samples apart
        return MannWhitney(u, 1.0)
    z = max(0.0, abs(u - mean) - 0.5) / math.sqrt(variance)
    return MannWhitney(u, min(1.0, math.erfc(z / math.sqrt(2))))


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


@dataclass(frozen=True)
class VersionStats:
    version: str
    runs: int
    succeeded: int
    success_rate: float | None
    median_duration_seconds: float | None
    mean_attempts: float | None
    mean_repairs: float | None
    mean_cost_usd: float | None
    """Over the runs whose cost is known (None when none is)."""
    costed_runs: int

    @classmethod
    def of(cls, version: str, samples: Sequence[Sample]) -> VersionStats:
        n = len(samples)
        costs = [s.cost_usd for s in samples if s.cost_usd is not None]
        ok = sum(s.succeeded for s in samples)
        return cls(version=version, runs=n, succeeded=ok, success_rate=ok / n if n else None,
                   median_duration_seconds=median([s.duration_seconds for s in samples]),
                   mean_attempts=sum(s.attempts for s in samples) / n if n else None,
                   mean_repairs=sum(s.repairs for s in samples) / n if n else None,
                   mean_cost_usd=sum(costs) / len(costs) if costs else None, costed_runs=len(costs))


@dataclass(frozen=True)
class Comparison:
    """The candidate against the current version, the tests' numbers, and what to do."""

    current: VersionStats
    candidate: VersionStats
    recommendation: Recommendation
    reasons: list[str]
    success_p_value: float | None = None
    duration_p_value: float | None = None
    cost_p_value: float | None = None
    min_samples: int = 0
    alpha: float = 0.05
    checks: dict[str, str] = field(default_factory=dict)
    """Each comparison's verdict: ``ok``, ``regressed``, ``not enough samples``, ``unknown``."""


def _relative(candidate: float | None, current: float | None) -> float | None:
    if candidate is None or current is None or current <= 0:
        return None
    return candidate / current - 1


def compare(current_version: str, current: Sequence[Sample], candidate_version: str, candidate: Sequence[Sample],
            settings: CanarySettings = CanarySettings()) -> Comparison:
    """Compare the candidate's samples with the current version's.

    - Rollback when the candidate is significantly worse (at ``alpha``) on success rate, or in
      duration or cost by more than the tolerance.
    - Promote when both versions have the minimum sample size and nothing regressed.
    - Continue otherwise: too few samples, which is said with how many are missing.
    """
    cur, cand = VersionStats.of(current_version, current), VersionStats.of(candidate_version, candidate)
    alpha, need = settings.alpha, settings.min_samples
    reasons: list[str] = []
    checks: dict[str, str] = {}
    if cur.runs < need or cand.runs < need:
        missing = [f"{v.version} has {v.runs} of {need}" for v in (cur, cand) if v.runs < need]
        return Comparison(cur, cand, Recommendation.CONTINUE,
                          [f"not enough finished runs yet: {'; '.join(missing)} (META_V4_CANARY_MIN_SAMPLES)"],
                          min_samples=need, alpha=alpha,
                          checks={"success_rate": "not enough samples", "duration": "not enough samples",
                                  "cost": "not enough samples"})
    regressed = False
    p_success = fisher_exact(cand.succeeded, cand.runs - cand.succeeded, cur.succeeded, cur.runs - cur.succeeded)
    assert cand.success_rate is not None and cur.success_rate is not None
    if cand.success_rate < cur.success_rate and p_success < alpha:
        regressed = True
        checks["success_rate"] = "regressed"
        reasons.append(f"success rate {cand.success_rate:.0%} against {cur.success_rate:.0%} "
                       f"(Fisher's exact test p={p_success:.4g} < {alpha:g})")
    else:
        checks["success_rate"] = "ok"
        reasons.append(f"success rate {cand.success_rate:.0%} against {cur.success_rate:.0%} "
                       f"(p={p_success:.4g}: no significant drop)")
    mw = mann_whitney([s.duration_seconds for s in candidate], [s.duration_seconds for s in current])
    slower = _relative(cand.median_duration_seconds, cur.median_duration_seconds)
    if slower is not None and slower > settings.duration_tolerance and mw.p_value < alpha \
            and mw.u > len(candidate) * len(current) / 2:
        regressed = True
        checks["duration"] = "regressed"
        reasons.append(f"median duration {cand.median_duration_seconds:.3g}s against "
                       f"{cur.median_duration_seconds:.3g}s (+{slower:.0%}, Mann-Whitney p={mw.p_value:.4g})")
    else:
        checks["duration"] = "ok"
        reasons.append(f"median duration {cand.median_duration_seconds:.3g}s against "
                       f"{cur.median_duration_seconds:.3g}s (Mann-Whitney p={mw.p_value:.4g})")
    p_cost: float | None = None
    cand_costs = [s.cost_usd for s in candidate if s.cost_usd is not None]
    cur_costs = [s.cost_usd for s in current if s.cost_usd is not None]
    if cand_costs and cur_costs:
        cm = mann_whitney(cand_costs, cur_costs)
        p_cost = cm.p_value
        dearer = _relative(cand.mean_cost_usd, cur.mean_cost_usd)
        if dearer is not None and dearer > settings.cost_tolerance and cm.p_value < alpha:
            regressed = True
            checks["cost"] = "regressed"
            reasons.append(f"mean cost ${cand.mean_cost_usd:.4g} against ${cur.mean_cost_usd:.4g} "
                           f"(+{dearer:.0%}, Mann-Whitney p={cm.p_value:.4g})")
        else:
            checks["cost"] = "ok"
    else:
        checks["cost"] = "unknown"
    recommendation = Recommendation.ROLLBACK if regressed else Recommendation.PROMOTE
    return Comparison(cur, cand, recommendation, reasons, success_p_value=p_success, duration_p_value=mw.p_value,
                      cost_p_value=p_cost, min_samples=need, alpha=alpha, checks=checks)
