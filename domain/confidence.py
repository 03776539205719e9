"""How far to trust a repaired run: a confidence from 0 to 1, a level, its parts, and risk signals.

A run that went green after auto-fix is only as good as its repairs. Each repair is scored on
what is known of it: how sure the classifier was, which rung fixed it (a retry of a known
transient failure is safer than a patch), how large the patch is, whether a deterministic fixer
or an LLM wrote it, how often the step was flaky before, and whether the checks ran green after
it. Risk signals read the patch itself: migrations or dependency manifests touched, tests or
assertions deleted or weakened, skip markers added, a large change, sensitive paths (the sandbox's
denied paths and the protected checks of :mod:`domain.protected`). A run's confidence is its
weakest repair's.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from metabuilder.domain.outcomes import Fixer, Strategy
from metabuilder.domain.protected import ProtectedCheck, default_checks
from metabuilder.domain.sandbox import PatchFormatError, parse_diff, path_problem, review_patch
from metabuilder.domain.taxonomy import FailureType


class Level(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


HIGH_AT, MEDIUM_AT = 0.8, 0.55
"""Scores at and above which a repair is ``high`` or ``medium`` (calibrated on the golden tasks)."""
LARGE_LINES, LARGE_FILES = 100, 5

RUNG_TRUST: dict[str, float] = {Strategy.RETRY: 0.95, Strategy.REPLAN: 0.85, Strategy.PATCH: 0.8,
                                Strategy.FLAKE_CHECK: 0.65}
"""How much a rung's success says about the run: a flake check passing means the test is unreliable."""
FIXER_TRUST: dict[str, float] = {Fixer.FIX_COMMAND: 0.95, Fixer.ALEMBIC_MERGE_HEADS: 0.95, Fixer.LLM: 0.7}
WEIGHTS: dict[str, float] = {"classifier": 0.2, "rung": 0.2, "patch_size": 0.15, "fixer": 0.15, "flake_history": 0.1,
                             "checks_green": 0.2}

MIGRATION_PATHS = ("*migrations/*", "*/migrate/*", "*alembic/versions/*", "db/schema.*", "*.sql")
MANIFEST_NAMES = ("package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "requirements*.txt",
                  "constraints*.txt", "pyproject.toml", "setup.py", "setup.cfg", "Pipfile", "Pipfile.lock",
                  "poetry.lock", "uv.lock", "go.mod", "go.sum", "Cargo.toml", "Cargo.lock", "Gemfile",
                  "Gemfile.lock", "pom.xml", "build.gradle", "build.gradle.kts", "composer.json", "composer.lock")
TEST_PATHS = ("test/*", "tests/*", "*/test/*", "*/tests/*", "test_*.py", "*/test_*.py", "*_test.py", "*_test.go",
              "*.test.*", "*.spec.*", "spec/*", "*/__tests__/*")
_ASSERTION = re.compile(r"\b(assert\w*|expect\s*\(|should\b|t\.(Error|Fatal)\w*|self\.fail|require\.\w+)")
_SKIP = re.compile(r"(pytest\.mark\.(skip|xfail)|unittest\.skip|@skip\w*\b|\b(it|test|describe)\.(skip|todo)\b|"
                   r"\bx(it|describe|test)\s*\(|t\.Skip(Now|f)?\(|@Disabled|@Ignore|\bskip\s*\(|# *noqa|"
                   r"type: *ignore)")


@dataclass(frozen=True)
class RiskSignal:
    name: str
    """``migrations``, ``dependency_manifest``, ``weakens_tests``, ``skip_marker``, ``large_patch``,
    ``sensitive_path``, ``flaky_step``."""
    detail: str
    severe: bool = False
    """A severe signal makes the level low whatever the score."""


@dataclass(frozen=True)
class RepairFacts:
    """What is known of one repair of a run."""

    step: str
    failure_type: FailureType
    classifier_confidence: float
    rung: Strategy
    fixer: Fixer | None = None
    diff: str = ""
    flaky_before: int = 0
    """Earlier runs of the same plan in which this step passed only on an unchanged re-run."""
    checks_green: bool = True
    """The step and every later one passed after the repair."""


@dataclass(frozen=True)
class Confidence:
    score: float
    level: Level
    parts: dict[str, float]
    """Each part's score from 0 to 1 (see :data:`WEIGHTS`)."""
    risks: list[RiskSignal] = field(default_factory=list)
    step: str = ""
    """The step of the weakest repair (the one that sets the run's confidence)."""


def _changed_lines(diff: str) -> int:
    try:
        return sum(len(f.added) + len(f.removed) for f in parse_diff(diff))
    except PatchFormatError:
        return 0


def patch_size_part(diff: str) -> float:
    lines = _changed_lines(diff)
    if not diff:
        return 1.0
    return 1.0 if lines <= 6 else 0.85 if lines <= 20 else 0.6 if lines <= LARGE_LINES else 0.3


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def risk_signals(diff: str, failure_type: FailureType, write_scope: Sequence[str] = (),
                 checks: Sequence[ProtectedCheck] | None = None) -> list[RiskSignal]:
    """What in a patch makes its repair risky, whatever the checks say."""
    if not diff:
        return []
    try:
        files = parse_diff(diff)
    except PatchFormatError as err:
        return [RiskSignal("sensitive_path", f"the patch cannot be read: {err}", severe=True)]
    out: list[RiskSignal] = []
    for f in files:
        path = f.new_path or f.old_path or ""
        if _matches(path, MIGRATION_PATHS):
            out.append(RiskSignal("migrations", f"{path}: a database migration or schema"))
        if _matches(path, MANIFEST_NAMES):
            out.append(RiskSignal("dependency_manifest", f"{path}: a dependency manifest or lock file"))
        if _matches(path, TEST_PATHS) or any(_matches(p, TEST_PATHS) for p in f.paths):
            removed = sum(bool(_ASSERTION.search(line)) for line in f.removed)
            added = sum(bool(_ASSERTION.search(line)) for line in f.added)
            if f.new_path is None:
                out.append(RiskSignal("weakens_tests", f"{path}: a test file is deleted", severe=True))
            elif removed > added:
                out.append(RiskSignal("weakens_tests", f"{path}: {removed - added} assertion(s) fewer", severe=True))
            elif removed:
                # The expectation of a test rewritten: the classic way to pass it without fixing the code.
                out.append(RiskSignal("weakens_tests", f"{path}: {removed} assertion(s) rewritten", severe=True))
        skips = [line.strip() for line in f.added if _SKIP.search(line)]
        if skips:
            out.append(RiskSignal("skip_marker", f"{path}: adds {skips[0][:60]!r}", severe=True))
        for p in f.paths:
            if problem := path_problem(p, ()):
                out.append(RiskSignal("sensitive_path", problem, severe=True))
    lines, count = sum(len(f.added) + len(f.removed) for f in files), len(files)
    if lines > LARGE_LINES or count > LARGE_FILES:
        out.append(RiskSignal("large_patch", f"{lines} changed lines in {count} file(s)"))
    review = review_patch(diff, failure_type, write_scope, checks if checks is not None else default_checks())
    out += [RiskSignal("sensitive_path", f"weakens a protected check: {f}", severe=True) for f in review.findings]
    return list(dict.fromkeys(out))


def score_repair(facts: RepairFacts, write_scope: Sequence[str] = ()) -> Confidence:
    """The confidence of one repair, with its parts and risk signals."""
    parts = {
        "classifier": round(max(0.0, min(1.0, facts.classifier_confidence)), 3),
        "rung": RUNG_TRUST.get(facts.rung, 0.5),
        "patch_size": patch_size_part(facts.diff),
        "fixer": FIXER_TRUST.get(facts.fixer, 0.7) if facts.fixer else 1.0,
        "flake_history": 1.0 if facts.flaky_before == 0 else 0.75 if facts.flaky_before == 1 else 0.5,
        "checks_green": 1.0 if facts.checks_green else 0.0,
    }
    risks = risk_signals(facts.diff, facts.failure_type, write_scope)
    if facts.flaky_before >= 2:
        risks.append(RiskSignal("flaky_step", f"{facts.step} passed only on a re-run in {facts.flaky_before} "
                                              "earlier runs of the plan"))
    score = sum(WEIGHTS[k] * v for k, v in parts.items())
    score -= 0.1 * sum(not r.severe for r in risks) + 0.25 * sum(r.severe for r in risks)
    score = round(max(0.0, min(1.0, score)), 3)
    return Confidence(score, level_of(score, risks, facts.checks_green), parts, risks, facts.step)


def level_of(score: float, risks: Sequence[RiskSignal], checks_green: bool = True) -> Level:
    if not checks_green or any(r.severe for r in risks) or score < MEDIUM_AT:
        return Level.LOW
    if risks or score < HIGH_AT:
        return Level.MEDIUM
    return Level.HIGH


def run_confidence(repairs: Sequence[RepairFacts], write_scope: Sequence[str] = ()) -> Confidence | None:
    """A repaired run's confidence: its weakest repair's (None for a run nothing repaired)."""
    scored = [score_repair(r, write_scope) for r in repairs]
    if not scored:
        return None
    weakest = min(scored, key=lambda c: c.score)
    risks = list(dict.fromkeys(r for c in scored for r in c.risks))
    return Confidence(weakest.score, level_of(weakest.score, risks, all(r.checks_green for r in repairs)),
                      weakest.parts, risks, weakest.step)
