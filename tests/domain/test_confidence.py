"""Confidence and risk signals of repairs: plain tables."""

from __future__ import annotations

import pytest

from metabuilder.domain.confidence import Level, RepairFacts, risk_signals, run_confidence, score_repair
from metabuilder.domain.outcomes import Fixer, Strategy
from metabuilder.domain.taxonomy import FailureType


def diff(path: str, removed: list[str], added: list[str], *, new: bool = False, deleted: bool = False) -> str:
    old = "/dev/null" if new else f"a/{path}"
    head = "/dev/null" if deleted else f"b/{path}"
    body = [f"-{line}" for line in removed] + [f"+{line}" for line in added]
    return f"--- {old}\n+++ {head}\n@@ -1,{len(removed)} +1,{len(added)} @@\n" + "\n".join(body) + "\n"


SMALL_FIX = diff("src/stats.py", ["    return ordered[middle]"],
                 ["    return (ordered[middle - 1] + ordered[middle]) / 2"])


@pytest.mark.parametrize(("patch", "failure", "names"), [
    (SMALL_FIX, FailureType.TEST_ASSERT, []),
    (diff("migrations/0003_add_email.py", [], ["op.add_column('users', sa.Column('email'))"], new=True),
     FailureType.SCHEMA_MIGRATION, ["migrations"]),
    (diff("requirements.txt", ["requests==2.31.0"], ["requests==2.32.3"]), FailureType.RUNTIME,
     ["dependency_manifest"]),
    (diff("package.json", ['  "left-pad": "1.0.0"'], ['  "left-pad": "1.3.0"']), FailureType.TYPECHECK,
     ["dependency_manifest"]),
    (diff("tests/test_rates.py", ["        self.assertEqual(rate(5000), 0)"], ["        pass"]),
     FailureType.TEST_ASSERT, ["weakens_tests", "sensitive_path"]),
    (diff("tests/test_rates.py", ["        self.assertEqual(rate(5000), 0)"],
          ["        self.assertEqual(rate(5000), 450)"]),
     FailureType.TEST_ASSERT, ["weakens_tests", "sensitive_path"]),
    (diff("test/slug.test.js", ['test("accents", () => {'], ['test.skip("accents", () => {']),
     FailureType.TEST_ASSERT, ["skip_marker", "sensitive_path"]),
    (diff("src/app.py", ["x = compute()"], ["x = compute()  # type: ignore[arg-type]"]), FailureType.TYPECHECK,
     ["skip_marker", "sensitive_path"]),
    (diff(".github/workflows/ci.yml", ["      - run: make test"], ["      - run: true"]), FailureType.TEST_ASSERT,
     ["sensitive_path"]),
    (diff("src/big.py", [], [f"line_{i} = {i}" for i in range(150)], new=True), FailureType.LINT, ["large_patch"]),
    ("not a diff", FailureType.LINT, ["sensitive_path"]),
])
def test_risk_signals_name_what_makes_a_patch_risky(patch: str, failure: FailureType, names: list[str]) -> None:
    assert [r.name for r in risk_signals(patch, failure)] == names


def facts(**kw: object) -> RepairFacts:
    base: dict[str, object] = {"step": "test", "failure_type": FailureType.TEST_ASSERT, "classifier_confidence": 0.95,
                               "rung": Strategy.PATCH, "fixer": Fixer.FIX_COMMAND, "diff": SMALL_FIX}
    return RepairFacts(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("repair", "level"), [
    (facts(), Level.HIGH),
    (facts(rung=Strategy.RETRY, fixer=None, diff="", failure_type=FailureType.TRANSIENT), Level.HIGH),
    (facts(fixer=Fixer.LLM), Level.HIGH),
    (facts(classifier_confidence=0.3, fixer=Fixer.LLM), Level.MEDIUM),
    (facts(rung=Strategy.FLAKE_CHECK, fixer=None, diff="", flaky_before=3), Level.MEDIUM),
    (facts(diff=diff("requirements.txt", ["a==1"], ["a==2"])), Level.MEDIUM),
    (facts(checks_green=False), Level.LOW),
    (facts(fixer=Fixer.LLM, diff=diff("tests/test_x.py", ["    assert f() == 1"], ["    assert f() == 2"])), Level.LOW),
    (facts(classifier_confidence=0.0, fixer=Fixer.LLM, rung=Strategy.FLAKE_CHECK, flaky_before=5,
           diff=diff("src/big.py", [], [f"v{i} = {i}" for i in range(150)], new=True)), Level.LOW),
])
def test_the_level_follows_the_parts_and_the_risks(repair: RepairFacts, level: Level) -> None:
    c = score_repair(repair)
    assert c.level is level, c
    assert 0.0 <= c.score <= 1.0
    assert set(c.parts) == {"classifier", "rung", "patch_size", "fixer", "flake_history", "checks_green"}


def test_more_of_what_lowers_trust_lowers_the_score() -> None:
    assert score_repair(facts(fixer=Fixer.LLM)).score < score_repair(facts()).score
    assert score_repair(facts(flaky_before=2)).score < score_repair(facts(flaky_before=0)).score
    assert score_repair(facts(classifier_confidence=0.5)).score < score_repair(facts()).score


def test_a_run_is_as_confident_as_its_weakest_repair() -> None:
    risky = facts(step="deps", diff=diff("go.mod", ["require x v1"], ["require x v2"]))
    run = run_confidence([facts(), risky])
    assert run is not None and run.step == "deps" and run.level is Level.MEDIUM
    assert [r.name for r in run.risks] == ["dependency_manifest"]
    assert run_confidence([]) is None
