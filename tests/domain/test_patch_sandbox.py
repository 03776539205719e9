"""The patch sandbox: paths, denied files, secrets and size."""

from __future__ import annotations

import pytest

from domain.sandbox import PatchLimits, check_patch, parse_diff


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
