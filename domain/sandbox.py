"""Sandbox rules: what a step's process may see, and what a patch may change.

A patch (from a fix command or an LLM) is checked before it is applied: every path must stay in
the workspace and in the plan's write scope, and never touch ``.git/``, CI configuration or
credential files; the lines it adds must carry no secrets; and it must be small. Breaking one of
these refuses it. A patch that would pass the failing check by weakening it (a protected check,
:mod:`domain.protected`) is not applied either: a person decides on it at a gate.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from metabuilder.domain.protected import CheckAction, Finding, ProtectedCheck, weakening
from metabuilder.domain.taxonomy import FailureType

_SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE|CREDENTIAL|API_?KEY|ACCESS_?KEY|AUTH)", re.IGNORECASE
)
_WORKER_ONLY = {"DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"}


def is_secret_name(name: str) -> bool:
    return name in _WORKER_ONLY or name.startswith("META_BUILDER_") or bool(_SECRET_NAME.search(name))


def step_environment(worker_env: Mapping[str, str], step_env: Mapping[str, str],
                     run_vars: Mapping[str, str]) -> dict[str, str]:
    """The environment of a step's command: the worker's, minus its secrets and its own
    settings, plus the step's declared variables and the run's ``METABUILDER_*`` facts."""
    env = {k: v for k, v in worker_env.items() if not is_secret_name(k)}
    env.update(step_env)
    env.update(run_vars)
    return env


# --- patches ------------------------------------------------------------------------------------

DENIED_PATHS: tuple[str, ...] = (
    ".git", ".git/*", "*/.git", "*/.git/*",
    ".github/workflows/*", ".github/actions/*", ".gitlab-ci.yml", ".gitlab/*", ".circleci/*",
    ".buildkite/*", "Jenkinsfile", "azure-pipelines.yml", ".azure-pipelines/*", ".travis.yml",
    "bitbucket-pipelines.yml", ".drone.yml", ".woodpecker/*", ".woodpecker.yml",
    ".env", ".env.*", "*/.env", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_ed25519*", "*/id_rsa*",
    ".ssh/*", ".netrc", ".npmrc", ".pypirc", ".aws/*", ".docker/config.json",
)
"""Paths no patch may touch, whatever the write scope says: git internals, CI config, credentials."""

SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b")),
    ("a GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b")),
    ("an OpenAI-style API key", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("a credential in a URL", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]{3,}@", re.I)),
    ("a hard-coded secret", re.compile(
        r"(?i)\b[a-z0-9_]*(password|passwd|secret|token|api_?key|access_?key)[a-z0-9_]*\s*[:=]\s*[\"'][^\"'\s]{8,}[\"']")),
)
"""What an added line may not contain; each is named in the rejection."""


@dataclass(frozen=True)
class PatchLimits:
    max_files: int = 20
    max_bytes: int = 256_000
    max_added_lines: int = 2000


@dataclass
class FileChange:
    """One file of a unified diff."""

    old_path: str | None
    """None for a new file."""
    new_path: str | None
    """None for a deleted file."""
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    binary: bool = False
    mode: str | None = None
    """New file mode when the diff sets one (``120000`` is a symlink)."""

    @property
    def paths(self) -> list[str]:
        return [p for p in dict.fromkeys((self.old_path, self.new_path)) if p is not None]


class PatchFormatError(ValueError):
    """The text is not a unified diff that can be checked."""


_GIT_HEADER = re.compile(r"^diff --git (\S+) (\S+)$")


def _strip(path: str) -> str | None:
    path = path.split("\t", 1)[0].strip()
    if path == "/dev/null":
        return None
    if path.startswith('"'):
        raise PatchFormatError(f"quoted path {path} (unusual characters in a file name) is not accepted")
    return path[2:] if path[:2] in ("a/", "b/") else path


def parse_diff(text: str) -> list[FileChange]:
    """The files a unified diff (``git diff`` or plain ``diff -u`` style) changes."""
    files: list[FileChange] = []
    current: FileChange | None = None
    for line in text.splitlines():
        if m := _GIT_HEADER.match(line):
            current = FileChange(_strip(m.group(1)), _strip(m.group(2)))
            files.append(current)
        elif line.startswith("--- ") and (current is None or current.added or current.removed
                                          or (current.old_path is None and current.new_path is None)):
            current = FileChange(_strip(line[4:]), None)
            files.append(current)
        elif line.startswith("--- ") and current is not None:
            current.old_path = _strip(line[4:])
        elif line.startswith("+++ ") and current is not None:
            current.new_path = _strip(line[4:])
        elif current is None:
            continue
        elif line.startswith(("new file mode ", "new mode ")):
            current.mode = line.rsplit(" ", 1)[1]
        elif line.startswith("rename to "):
            current.new_path = line[len("rename to "):]
        elif line.startswith("rename from "):
            current.old_path = line[len("rename from "):]
        elif line.startswith(("Binary files ", "GIT binary patch")):
            current.binary = True
        elif line.startswith("+") and not line.startswith("+++"):
            current.added.append(line[1:])
        elif line.startswith("-") and not line.startswith("---"):
            current.removed.append(line[1:])
    if not files:
        raise PatchFormatError("no file changes found (expected a unified diff)")
    return files


def path_problem(path: str, write_scope: Sequence[str]) -> str | None:
    """Why a patch may not touch ``path`` (relative to the workspace root), or None."""
    if path.startswith("/") or "\\" in path or "\0" in path:
        return f"{path!r}: not a relative workspace path"
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        return f"{path!r}: outside the workspace"
    lowered = norm.lower()
    for pattern in DENIED_PATHS:
        if fnmatch.fnmatchcase(lowered, pattern):
            return f"{path!r}: denied path ({pattern})"
    if write_scope and not any(fnmatch.fnmatchcase(norm, p) for p in write_scope):
        return f"{path!r}: outside the plan's write scope ({', '.join(write_scope)})"
    return None


def secret_problem(lines: Iterable[str]) -> str | None:
    for line in lines:
        for name, pattern in SECRET_PATTERNS:
            if pattern.search(line):
                return f"adds {name}"
    return None


def check_patch(diff: str, write_scope: Sequence[str], limits: PatchLimits = PatchLimits()) -> list[str]:
    """Every reason this patch may not be applied (empty: it may)."""
    if len(diff.encode()) > limits.max_bytes:
        return [f"the patch is {len(diff.encode())} bytes; the limit is {limits.max_bytes}"]
    try:
        files = parse_diff(diff)
    except PatchFormatError as err:
        return [str(err)]
    return _hard_problems(files, write_scope, limits)


def _hard_problems(files: list[FileChange], write_scope: Sequence[str], limits: PatchLimits) -> list[str]:
    problems = []
    if len(files) > limits.max_files:
        problems.append(f"the patch changes {len(files)} files; the limit is {limits.max_files}")
    added = sum(len(f.added) for f in files)
    if added > limits.max_added_lines:
        problems.append(f"the patch adds {added} lines; the limit is {limits.max_added_lines}")
    for f in files:
        problems += [p for path in f.paths if (p := path_problem(path, write_scope))]
        if f.mode == "120000":
            problems.append(f"{f.new_path!r}: creates a symbolic link")
        if f.binary:
            problems.append(f"{f.new_path or f.old_path!r}: binary changes are not accepted")
        if secret := secret_problem(f.added):
            problems.append(f"{f.new_path or f.old_path!r}: {secret}")
    return list(dict.fromkeys(problems))


# --- check-weakening ----------------------------------------------------------------------------

class Verdict(StrEnum):
    ALLOWED = "allowed"
    """The ladder may apply it."""
    REFUSED = "refused"
    """Never applied: it breaks a sandbox rule, or weakens a check whose action is ``refuse``."""
    GATE = "gate"
    """A high-risk proposal: it would weaken a protected check, so only a person may apply it."""


@dataclass(frozen=True)
class PatchReview:
    """The sandbox's answer on one patch."""

    verdict: Verdict
    problems: list[str]
    """Why it was refused or sent to a gate (empty when allowed)."""
    files: list[str]
    """Every path the patch names (both sides of a rename)."""
    findings: list[Finding] = field(default_factory=list)


def review_patch(diff: str, failure_type: FailureType, write_scope: Sequence[str],
                 checks: Sequence[ProtectedCheck], limits: PatchLimits = PatchLimits()) -> PatchReview:
    """Check a patch proposed for a failure of ``failure_type`` against the sandbox rules and
    the protected ``checks``."""
    try:
        files = parse_diff(diff)
    except PatchFormatError as err:
        return PatchReview(Verdict.REFUSED, [str(err)], [])
    paths = list(dict.fromkeys(p for f in files for p in f.paths))
    if len(diff.encode()) > limits.max_bytes:
        return PatchReview(Verdict.REFUSED, check_patch(diff, write_scope, limits), paths)
    problems = _hard_problems(files, write_scope, limits)
    changes = [(f.new_path or f.old_path or "", f.new_path is None, f.added, f.removed) for f in files]
    # A rename takes the old file away: checked as a deletion of it too.
    changes += [(f.old_path, True, [], f.removed) for f in files if f.old_path and f.new_path
                and f.old_path != f.new_path]
    findings = weakening(changes, failure_type, checks, write_scope)
    problems += [f"weakens a protected check: {f}" for f in findings]
    if problems and (len(problems) > len(findings) or any(f.action is CheckAction.REFUSE for f in findings)):
        return PatchReview(Verdict.REFUSED, problems, paths, findings)
    return PatchReview(Verdict.GATE if findings else Verdict.ALLOWED, problems, paths, findings)


def changed_path_findings(paths: Iterable[str], failure_type: FailureType, checks: Sequence[ProtectedCheck],
                          write_scope: Sequence[str]) -> list[Finding]:
    """Protected checks that the paths git actually changed would weaken (paths alone: the
    diff's headers are not trusted to name every file)."""
    return weakening([(p, False, [], []) for p in paths], failure_type, checks, write_scope)
