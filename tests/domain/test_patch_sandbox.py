"""The patch sandbox: paths, denied files, secrets and size, and the check-weakening rules."""

from __future__ import annotations

import pytest

from metabuilder.domain.plans import PlanError, parse_plan
from metabuilder.domain.protected import CheckAction, ProtectedChecksError, default_checks, load_checks
from metabuilder.domain.sandbox import PatchLimits, Verdict, check_patch, parse_diff, review_patch
from metabuilder.domain.taxonomy import FailureType


def diff(path: str, added: str = "x = 1", old: str | None = None) -> str:
    old = path if old is None else old
    return f"diff --git a/{old} b/{path}\n--- a/{old}\n+++ b/{path}\n@@ -1 +1 @@\n-x = 0\n+{added}\n"


def test_a_plain_patch_in_scope_passes() -> None:
    assert check_patch(diff("src/app.py"), ["src/*"]) == []
    assert parse_diff(diff("src/app.py"))[0].added == ["x = 1"]


@pytest.mark.parametrize(("path", "reason"), [
    ("../outside.py", "outside the workspace"),
    ("/etc/passwd", "not a relative workspace path"),
    ("src/../../x.py", "outside the workspace"),
    (".git/hooks/pre-commit", "denied path"),
    ("sub/.git/config", "denied path"),
    (".github/workflows/ci.yml", "denied path"),
    (".gitlab-ci.yml", "denied path"),
    ("deploy/server.pem", "denied path"),
    (".env", "denied path"),
    ("docs/readme.md", "outside the plan's write scope"),
])
def test_paths_that_are_refused(path: str, reason: str) -> None:
    problems = check_patch(diff(path), ["src/*", "*.py"])
    assert any(reason in p for p in problems), problems


def test_a_rename_is_checked_on_both_sides() -> None:
    problems = check_patch(diff("src/app.py", old=".github/workflows/ci.yml"), [])
    assert any("denied path" in p for p in problems)


@pytest.mark.parametrize(("line", "what"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "a private key"),
    ("aws_key = 'AKIAABCDEFGHIJKLMNOP'", "an AWS access key id"),
    ("token = 'ghp_" + "a" * 36 + "'", "a GitHub token"),
    ("DB = 'postgresql://admin:hunter22@db/prod'", "a credential in a URL"),
    ("API_KEY = \"0123456789abcdef\"", "a hard-coded secret"),
])
def test_added_secrets_are_refused(line: str, what: str) -> None:
    assert check_patch(diff("src/app.py", line), []) == [f"'src/app.py': adds {what}"]


def test_removing_a_secret_is_fine_and_symlinks_and_binaries_are_not() -> None:
    removal = "--- a/k.py\n+++ b/k.py\n@@ -1 +0,0 @@\n-KEY = '-----BEGIN RSA PRIVATE KEY-----'\n"
    assert check_patch(removal, []) == []
    link = "diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+/etc/passwd\n"
    assert any("symbolic link" in p for p in check_patch(link, []))
    binary = "diff --git a/i.png b/i.png\nBinary files a/i.png and b/i.png differ\n"
    assert any("binary" in p for p in check_patch(binary, []))


def test_size_limits_and_garbage() -> None:
    big = "".join(diff(f"f{i}.py") for i in range(3))
    assert check_patch(big, [], PatchLimits(max_files=2)) == ["the patch changes 3 files; the limit is 2"]
    assert check_patch("x" * 100, [], PatchLimits(max_bytes=10)) == ["the patch is 100 bytes; the limit is 10"]
    assert check_patch("hello", []) == ["no file changes found (expected a unified diff)"]


# --- check-weakening: class x changed path x patch content -> verdict -------------------------

def change(path: str, added: list[str] | None = None, removed: list[str] | None = None, *,
           deleted: bool = False) -> str:
    """A one-file diff: ``removed`` lines go, ``added`` lines come (or the file is deleted)."""
    added, removed = added or [], removed or ["x = 0"]
    new = "/dev/null" if deleted else f"b/{path}"
    body = "".join(f"-{line}\n" for line in removed) + "".join(f"+{line}\n" for line in added)
    return (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ {new}\n"
            f"@@ -1,{len(removed)} +{0 if deleted else 1},{len(added)} @@\n{body}")


ANY = list(FailureType)
L, T, A, U, R = (FailureType.LINT, FailureType.TYPECHECK, FailureType.TEST_ASSERT, FailureType.UNKNOWN,
                 FailureType.RUNTIME)
OK, REFUSED, GATE = Verdict.ALLOWED, Verdict.REFUSED, Verdict.GATE

CASES = [
    # license allowlists and license data, whatever the class
    (R, change("third_party/licenses.json", ['"license": "MIT"'], ['"license": "AGPL-3.0"']), GATE, "license data"),
    (U, change(".license-allowlist.txt", ["AGPL-3.0-only"]), GATE, "license data"),
    (A, change("deps/meta.yaml", ["  license: MIT"], ["  license: AGPL-3.0"]), GATE, "license data"),
    (L, change("pyproject.toml", ['license = "MIT"'], ['license = "AGPL-3.0"']), GATE, "license data"),
    (R, change("src/report.py", ["x = 'MIT'"]), OK, None),  # code that merely says MIT
    # secret-scanner baselines and allowlists, and inline allowlisting
    (A, change(".secrets.baseline", ['"results": {}']), GATE, "secret-scanner"),
    (R, change(".gitleaks.toml", ["paths = ['config/']"]), GATE, "secret-scanner"),
    (R, change(".gitleaksignore", ["abc123:config/settings.py:generic-api-key:3"]), GATE, "secret-scanner"),
    (R, change("config/settings.py", ["PASSWORD = x  # pragma: allowlist secret"]), GATE, "secret-scanner"),
    # security and policy tool configs
    (R, change(".bandit", ["skips: ['B101']"]), GATE, "security or policy"),
    (U, change(".trivyignore", ["CVE-2023-1234"]), GATE, "security or policy"),
    (A, change("policy/deploy.rego", ["allow = true"]), GATE, "security or policy"),
    (R, change("app/db.py", ["cur.execute(q)  # nosec B608"]), GATE, "security or policy"),
    # lint and type-check configs and inline suppressions: for LINT and TYPECHECK (and UNKNOWN)
    (T, change("mypy.ini", ["ignore_errors = True"]), GATE, "lint or type-check configuration"),
    (L, change(".flake8", ["extend-ignore = E501"]), GATE, "lint or type-check configuration"),
    (L, change("pyproject.toml", ['extend-ignore = ["E501"]']), GATE, "lint or type-check configuration"),
    (L, change("web/.eslintrc.json", ['"rules": {}']), GATE, "lint or type-check configuration"),
    (R, change("mypy.ini", ["ignore_errors = True"]), OK, None),  # a runtime failure: not the check that failed
    (T, change("app.py", ["return str(x)  # type: ignore[return-value]"]), GATE, "suppression"),
    (L, change("app.py", ["import os  # noqa: F401"]), GATE, "suppression"),
    (L, change("web/a.ts", ["// eslint-disable-next-line no-unused-vars"]), GATE, "suppression"),
    (T, change("web/a.ts", ["// @ts-ignore"]), GATE, "suppression"),
    (U, change("app.py", ["x = f()  # type: ignore"]), GATE, "suppression"),
    (A, change("app.py", ["x = f()  # type: ignore"]), OK, None),
    (T, change("app.py", ["return int(x)"]), OK, None),
    # tests deleted, skipped or weakened, for TEST_ASSERT
    (A, change("tests/test_calc.py", [], ["def test_add():"], deleted=True), GATE, "tests"),
    (A, change("tests/test_calc.py", ["@pytest.mark.skip(reason='flaky')"]), GATE, "tests"),
    (A, change("tests/test_calc.py", ["    assert add(2, 2) == 5"], ["    assert add(2, 2) == 4"]), GATE, "tests"),
    (A, change("web/calc.test.js", ["it.skip('adds', () => {"], ["it('adds', () => {"]), GATE, "tests"),
    (A, diff("notes/old_calc.txt", "x = 1", old="tests/test_calc.py"), GATE, "'tests/test_calc.py': deletes the file"),
    (A, change("pytest.ini", ["addopts = -q"]), GATE, "test runner configuration"),
    (A, change("pyproject.toml", ['addopts = "--deselect tests/test_calc.py::test_add"']), GATE, "test runner"),
    (A, change("tests/conftest.py", ['collect_ignore = ["test_calc.py"]']), GATE, "test"),
    (A, change("web/jest.config.js", ["testPathIgnorePatterns: ['calc']"]), GATE, "test runner configuration"),
    (L, change("pytest.ini", ["addopts = -q"]), OK, None),
    (A, change("calc_test.go", ["\tt.Skip()"]), GATE, "tests"),
    (A, change("src/calc.py", ["    return a + b"], ["    return a - b"]), OK, None),  # the code under test
    (L, change("tests/test_calc.py", ["    assert add(2, 2) == 4"], ["    assert add(2,2) == 4"]), OK, None),
    # the hard rules still refuse, whatever else
    (A, change(".github/workflows/ci.yml", ["run: true"]), REFUSED, "denied path"),
    (T, change("app.py", ["KEY = '-----BEGIN RSA PRIVATE KEY-----'  # type: ignore"]), REFUSED, "private key"),
]


@pytest.mark.parametrize(("failure", "patch", "verdict", "why"), CASES,
                         ids=[f"{c[0]}-{parse_diff(c[1])[0].old_path}-{c[2]}" for c in CASES])
def test_check_weakening_rules(failure: FailureType, patch: str, verdict: Verdict, why: str | None) -> None:
    review = review_patch(patch, failure, [], default_checks())
    assert review.verdict is verdict, review.problems
    if why is None:
        assert review.problems == [] and review.findings == []
    else:
        assert any(why in p for p in review.problems), review.problems
    assert review.files == [p for p in parse_diff(patch)[0].paths]  # recorded whatever the verdict


def test_a_refused_patch_still_names_its_files() -> None:
    review = review_patch(change("src/big.py", ["x = 1"] * 50), R, [], default_checks(), PatchLimits(max_bytes=100))
    assert (review.verdict, review.files) == (REFUSED, ["src/big.py"])
    assert review.problems[0].startswith("the patch is ")


def test_a_write_scope_naming_tests_makes_them_fair_game() -> None:
    weakened = change("tests/test_calc.py", ["    assert add(2, 2) == 5"], ["    assert add(2, 2) == 4"])
    assert review_patch(weakened, A, ["src/*", "tests/*"], default_checks()).verdict is OK
    # A scope that only happens to cover tests (*.py) does not say they are fair game.
    assert review_patch(weakened, A, ["*.py"], default_checks()).verdict is GATE


def test_a_plans_own_protected_check_extends_the_list_and_may_refuse() -> None:
    plan = parse_plan("name: p\nprotected_checks:\n"
                      "  - name: vendored notices\n    paths: [third_party/NOTICE]\n    action: refuse\n"
                      "  - name: golden files\n    classes: [TEST_ASSERT]\n    paths: ['tests/golden/*']\n"
                      "steps:\n  - {name: a, command: x}\n")
    checks = [*default_checks(), *plan.protected_checks]
    refused = review_patch(change("third_party/NOTICE", ["MIT"]), R, [], checks)
    assert refused.verdict is REFUSED
    assert refused.problems == ["weakens a protected check: 'third_party/NOTICE': changes the file (vendored notices)"]
    assert review_patch(change("tests/golden/out.txt", ["42"]), A, [], checks).verdict is GATE
    assert review_patch(change("tests/golden/out.txt", ["42"]), R, [], checks).verdict is OK
    # The bundled entries stay: a plan only adds.
    assert review_patch(change(".secrets.baseline", ["{}"]), R, [], checks).verdict is GATE


def test_protected_checks_are_validated_with_their_lines() -> None:
    text = ("name: p\nprotected_checks:\n"
            "  - name: a\n    classes: [LINT, NOPE]\n    added: [[x], '(']\n"
            "  - paths: x\n    action: maybe\n"
            "  - name: empty\n"
            "steps:\n  - {name: a, command: x}\n")
    with pytest.raises(PlanError) as err:
        parse_plan(text, source="p.yaml")
    problems = [str(p) for p in err.value.problems]
    assert "p.yaml:4: protected_checks[0] (a).classes[1]: unknown failure class 'NOPE' (expected one of: " \
        "TRANSIENT, INFRA, TEST_ASSERT, LINT, TYPECHECK, SECURITY, POLICY, RUNTIME, SCHEMA_MIGRATION, " \
        "RATE_LIMIT, UNKNOWN)" in problems
    assert "p.yaml:5: protected_checks[0] (a).added[0]: expected a single value, got a list" in problems
    assert any(p.startswith("p.yaml:5: protected_checks[0] (a).added[1]: not a valid regular expression")
               for p in problems)
    assert "p.yaml:6: protected_checks[1].name: missing (every check needs a name)" in problems
    assert "p.yaml:6: protected_checks[1].paths: expected a list, got 'x'" in problems
    assert any(p.startswith("p.yaml:7: protected_checks[1].action: unknown action 'maybe'") for p in problems)
    assert "p.yaml:8: protected_checks[2] (empty): matches nothing: give paths, added, removed or deleted" in problems


def test_the_bundled_list_loads_and_says_why() -> None:
    checks = default_checks()
    assert [c.name for c in checks] == [
        "license data", "secret-scanner baseline or allowlist", "security or policy tool configuration",
        "lint or type-check configuration", "inline lint or type-check suppression", "tests",
        "test runner configuration"]
    assert all(c.why and c.action is CheckAction.GATE for c in checks)
    with pytest.raises(ProtectedChecksError, match="x.yaml:1: expected a list of checks"):
        load_checks("name: not a list\n", "x.yaml")
