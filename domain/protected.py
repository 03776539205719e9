"""Protected checks: what a patch may not change in order to make a failing check pass.

A repair that relabels a dependency's license, adds a finding to a secret scanner's baseline,
silences a type error with ``# type: ignore`` or skips the failing test "fixes" the step by
weakening what judges it. The bundled list (``domain/protected_checks.yaml``) names such changes;
a plan adds its own under ``protected_checks:``. Which entries apply depends on the failure
class; what they match is the patch's paths and the lines it adds or removes.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml

from metabuilder.domain.taxonomy import FailureType
from metabuilder.domain.yaml_reader import Problem, YamlReader, YamlSyntaxError, compose, kind_of

BUNDLED_PATH = Path(__file__).with_name("protected_checks.yaml")


class CheckAction(StrEnum):
    """What happens to a patch that would weaken a protected check."""

    GATE = "gate"
    """Not applied by the ladder: a person sees it at a gate as a high-risk proposal."""
    REFUSE = "refuse"
    """Never applied."""


@dataclass(frozen=True)
class ProtectedCheck:
    """One kind of check-weakening change (an entry of the YAML list)."""

    name: str
    why: str = ""
    classes: tuple[FailureType, ...] = ()
    """Failure classes it applies to; empty for every class. UNKNOWN always counts as a match."""
    paths: tuple[str, ...] = ()
    """Globs of files the patch may not change at all."""
    added: tuple[str, ...] = ()
    """Regexes over added lines."""
    removed: tuple[str, ...] = ()
    """Regexes over removed (or changed) lines."""
    deleted: bool = False
    """Deleting a file (of ``in_paths``) matches."""
    in_paths: tuple[str, ...] = ()
    """Limits ``added``, ``removed`` and ``deleted`` to these files (empty: every file)."""
    waived_by_test_scope: bool = False
    """Does not apply to a file that a plan's write-scope glob naming tests (``tests/*``) covers."""
    action: CheckAction = CheckAction.GATE

    def applies_to(self, failure_type: FailureType) -> bool:
        return not self.classes or failure_type is FailureType.UNKNOWN or failure_type in self.classes


@dataclass(frozen=True)
class Finding:
    """A protected check that a patch would weaken, and how."""

    check: str
    action: CheckAction
    file: str
    how: str
    """``changes the file``, ``deletes the file``, ``adds '# type: ignore[...]'``..."""

    def __str__(self) -> str:
        return f"{self.file!r}: {self.how} ({self.check})"


_KEYS = {"name", "why", "classes", "paths", "added", "removed", "deleted", "in_paths", "waived_by_test_scope",
         "action"}


def parse_checks(reader: YamlReader, node: yaml.Node, fld: str) -> list[ProtectedCheck]:
    """A list of protected checks from YAML, problems collected in ``reader`` with their lines."""
    if not isinstance(node, yaml.SequenceNode):
        reader.problem(node, fld, f"expected a list of checks, got {kind_of(node)}")
        return []
    checks = []
    for index, item in enumerate(node.value):
        before = len(reader.problems)
        where = f"{fld}[{index}]"
        keys = reader.mapping(item, where, _KEYS)
        if not isinstance(item, yaml.MappingNode):
            continue
        name = reader.string(keys["name"][1], f"{where}.name") if "name" in keys else None
        if "name" not in keys:
            reader.problem(item, f"{where}.name", "missing (every check needs a name)")
        where = f"{where} ({name})" if name else where
        values: dict[str, object] = {}
        for key in ("paths", "in_paths"):
            if key in keys:
                values[key] = tuple(p.lower() for p in reader.string_list(keys[key][1], f"{where}.{key}"))
        for key in ("added", "removed"):
            if key in keys:
                values[key] = tuple(_regexes(reader, keys[key][1], f"{where}.{key}"))
        for key in ("deleted", "waived_by_test_scope"):
            if key in keys:
                values[key] = reader.boolean(keys[key][1], f"{where}.{key}")
        if "classes" in keys:
            values["classes"] = tuple(_classes(reader, keys["classes"][1], f"{where}.classes"))
        if "action" in keys:
            values["action"] = reader.choice(keys["action"][1], f"{where}.action", CheckAction, "action")
        if "why" in keys:
            values["why"] = reader.string(keys["why"][1], f"{where}.why") or ""
        if not {"paths", "added", "removed", "deleted"} & set(keys):
            reader.problem(item, where, "matches nothing: give paths, added, removed or deleted")
        if len(reader.problems) == before and name is not None:
            checks.append(ProtectedCheck(name=name, **values))  # type: ignore[arg-type]
    return checks


def _regexes(reader: YamlReader, node: yaml.Node, fld: str) -> list[str]:
    if not isinstance(node, yaml.SequenceNode):
        reader.problem(node, fld, f"expected a list, got {kind_of(node)}")
        return []
    out = []
    for i, item in enumerate(node.value):
        if (text := reader.string(item, f"{fld}[{i}]")) is None:
            continue
        try:
            re.compile(text)
        except re.error as err:
            reader.problem(item, f"{fld}[{i}]", f"not a valid regular expression: {err}")
            continue
        out.append(text)
    return out


def _classes(reader: YamlReader, node: yaml.Node, fld: str) -> list[FailureType]:
    if not isinstance(node, yaml.SequenceNode):
        reader.problem(node, fld, f"expected a list of failure classes, got {kind_of(node)}")
        return []
    if not node.value:
        reader.problem(node, fld, "an empty list matches no failure (leave classes out for every class)")
    return [t for i, item in enumerate(node.value)
            if (t := reader.choice(item, f"{fld}[{i}]", FailureType, "failure class")) is not None]


def check_to_dict(check: ProtectedCheck) -> dict[str, object]:
    """A check in its YAML keys, defaults left out."""
    default = ProtectedCheck(name=check.name)
    out: dict[str, object] = {"name": check.name}
    for key in sorted(_KEYS - {"name"}):
        value = getattr(check, key)
        if value != getattr(default, key):
            out[key] = [str(v) for v in value] if isinstance(value, tuple) else \
                value.value if isinstance(value, StrEnum) else value
    return out


class ProtectedChecksError(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("invalid protected checks:\n" + "\n".join(f"  {p}" for p in problems))


def load_checks(text: str, source: str) -> list[ProtectedCheck]:
    """A whole file of protected checks; :class:`ProtectedChecksError` naming every problem."""
    reader = YamlReader(source)
    try:
        root = compose(text, source)
    except YamlSyntaxError as err:
        raise ProtectedChecksError([err.problem]) from err
    checks = parse_checks(reader, root, "") if root is not None else []
    if reader.problems:
        raise ProtectedChecksError(reader.problems)
    return checks


@cache
def default_checks() -> tuple[ProtectedCheck, ...]:
    """The bundled list."""
    return tuple(load_checks(BUNDLED_PATH.read_text(encoding="utf-8"), str(BUNDLED_PATH)))


@cache
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _matches(path: str, globs: Sequence[str]) -> bool:
    lowered = path.lower()
    return any(fnmatch.fnmatchcase(lowered, g) for g in globs)


def tests_in_scope(path: str, write_scope: Sequence[str]) -> bool:
    """Whether the plan's write scope makes this test file fair game: a glob of it that names
    tests (``tests/*``, ``test_*.py``, ``*.spec.ts``) covers the file."""
    return any(re.search(r"(?i)test|spec", g) and fnmatch.fnmatchcase(path, g) for g in write_scope)


def weakening(files: Sequence[tuple[str, bool, Sequence[str], Sequence[str]]], failure_type: FailureType,
              checks: Sequence[ProtectedCheck], write_scope: Sequence[str] = ()) -> list[Finding]:
    """What the changed files (``(path, deleted, added lines, removed lines)`` each) would weaken,
    for a failure of ``failure_type``. One finding per check and file, the first match."""
    findings = []
    for check in checks:
        if not check.applies_to(failure_type):
            continue
        for path, deleted, added, removed in files:
            if check.waived_by_test_scope and tests_in_scope(path, write_scope):
                continue
            if how := _how(check, path, deleted, added, removed):
                findings.append(Finding(check.name, check.action, path, how))
    return findings


def _how(check: ProtectedCheck, path: str, deleted: bool, added: Sequence[str], removed: Sequence[str]) -> str | None:
    if check.paths and _matches(path, check.paths):
        return "deletes the file" if deleted else "changes the file"
    if check.in_paths and not _matches(path, check.in_paths):
        return None
    if check.deleted and deleted:
        return "deletes the file"
    for verb, lines, patterns in (("adds", added, check.added), ("removes or changes", removed, check.removed)):
        for line in lines:
            if any(_pattern(p).search(line) for p in patterns):
                return f"{verb} {line.strip()[:80]!r}"
    return None
