"""The failure knowledge base: patterns as data, one entry per known failure message.

The bundled base is ``domain/failure_patterns.yaml``; a tenant adds entries of its own later (the
API stores them) and :meth:`KnowledgeBase.extended` builds the combined base. An entry::

    - id: python.no-space
      class: INFRA
      pattern: 'No space left on device'
      weight: 0.95
      description: The disk (or a quota) is full.

``weight`` is the entry's specificity, from 0 to 1: a message that names its cause ("No space
left on device", "AssertionError") weighs more than a generic frame ("FAILED", "BUILD FAILURE").
``kind`` is ``cause`` (the default: the line says what went wrong), ``anchor`` (the line marks
where the build gave up, like ``##[error]Process completed with exit code 1``: no class, it
only tells the classifier where the failure is) or ``retry_after`` (the line says how long to
wait; it also counts as evidence for its class).

Patterns use the dialect that Python ``re``, Hyperscan and GNU ``grep -E`` share, so that the
same file drives every engine and the benchmark against grep is like for like: literals,
``[...]`` classes, groups, alternation, ``? * + {m,n}``, ``.``, ``\\s \\S \\w \\W \\b``; no ``\\d``
(write ``[0-9]``), no look-around, no back-references, no inline flags. A pattern matches within
one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from metabuilder.domain.problems import Problem
from metabuilder.domain.taxonomy import FailureType

if TYPE_CHECKING:
    import yaml

    from metabuilder.domain.yaml_reader import YamlReader

BUNDLED_PATH = Path(__file__).with_name("failure_patterns.yaml")


class EntryKind(StrEnum):
    CAUSE = "cause"
    ANCHOR = "anchor"
    RETRY_AFTER = "retry_after"


@dataclass(frozen=True, slots=True)
class PatternEntry:
    """One known failure message."""

    id: str
    pattern: str
    failure_type: FailureType | None
    """None for anchors, which locate a failure without naming its kind."""
    weight: float
    description: str
    kind: EntryKind = EntryKind.CAUSE


class KnowledgeBaseError(ValueError):
    """A knowledge-base file or entry that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("invalid failure patterns:\n" + "\n".join(f"  {p}" for p in problems))


# Kept as text, compiled (and cached by re) when first used: a `classify` process reads the
# parsed entries from a cache and never needs them.
_ID = r"^[a-z0-9][a-z0-9_.-]{0,79}$"
_ENTRY_KEYS = {"id", "class", "pattern", "weight", "description", "kind"}
# Constructs outside the dialect shared by re, Hyperscan and grep -E.
_UNPORTABLE = [
    (r"\\[dD]", r"\d is not understood by grep -E: write [0-9]"),
    (r"\(\?", "inline flags, look-around and non-capturing groups are not portable"),
    (r"\\[1-9]", "back-references are not supported"),
    (r"\\[nr]|\n", "patterns match within one line: no newlines"),
    (r"\\[AZzG]", r"\A, \Z and \G are not portable: use ^ and $"),
    (r"\*\?|\+\?|\?\?|\}\?", "lazy quantifiers are not portable"),
]


# What CI runners put before a tool's own output on a line: an ISO or clock timestamp (GitHub
# Actions, Jenkins timestamper, GitLab's stream tag such as "00O+") and a workflow-command marker.
LINE_PREFIX = (
    r"((\[?[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})?\]?"
    r"|\[?[0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]+)?\]?)( [0-9a-f]{2}[OE]\+?)? ?)?(##\[[a-z]+\])?"
)


def expand_anchors(pattern: str) -> str:
    """``pattern`` with each line-start ``^`` also allowing a CI line prefix after it.

    Authors write ``^FAILED ``; a runner stores ``2026-11-21T10:00:00.1Z FAILED ...``. Expanding the
    anchor once at compile time keeps scanning free of any per-line rewriting.
    """
    out, in_class, escaped = [], False, False
    for i, ch in enumerate(pattern):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]" or pattern[i - 1] == "[" or pattern[i - 2:i] == "[^"
        elif ch == "[":
            in_class = True
        elif ch == "^":
            out.append("^" + LINE_PREFIX)
            continue
        out.append(ch)
    return "".join(out)


def check_pattern(pattern: str) -> str | None:
    """Why ``pattern`` cannot be used (None if it can)."""
    if not pattern or not pattern.strip():
        return "must not be empty"
    if len(pattern) > 1000:
        return "longer than 1000 characters"
    for rule, reason in _UNPORTABLE:
        if re.search(rule, pattern):
            return reason
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        return f"not a valid regular expression: {err}"
    if compiled.search(""):
        return "matches the empty line (it would match every line)"
    return None


def parse_entries(text: str, source: str = "<patterns>") -> list[PatternEntry]:
    """Entries from knowledge-base YAML (a list of mappings); raises :class:`KnowledgeBaseError`."""
    # Imported here: a `classify` process reads the parsed entries from a cache, without PyYAML.
    import yaml

    from metabuilder.domain.yaml_reader import YamlReader, YamlSyntaxError, compose, kind_of

    try:
        root = compose(text, source)
    except YamlSyntaxError as err:
        raise KnowledgeBaseError([err.problem]) from err
    if root is None:
        return []
    reader = YamlReader(source)
    if not isinstance(root, yaml.SequenceNode):
        reader.problem(root, "", f"expected a list of pattern entries, got {kind_of(root)}")
        raise KnowledgeBaseError(reader.problems)
    entries = [e for i, node in enumerate(root.value) if (e := _parse_entry(reader, node, i)) is not None]
    _check_unique(reader, entries, root.value)
    if reader.problems:
        raise KnowledgeBaseError(reader.problems)
    return entries


def _parse_entry(reader: YamlReader, node: yaml.Node, index: int) -> PatternEntry | None:
    import yaml

    where = f"[{index}]"
    before = len(reader.problems)
    keys = reader.mapping(node, where, _ENTRY_KEYS)
    if not isinstance(node, yaml.MappingNode):
        return None
    for required in ("id", "pattern", "weight"):
        if required not in keys:
            reader.problem(node, f"{where}.{required}", "missing")
    entry_id = reader.string(keys["id"][1], f"{where}.id") if "id" in keys else None
    if entry_id is not None and not re.match(_ID, entry_id):
        reader.problem(keys["id"][1], f"{where}.id",
                       f"{entry_id!r} is not a valid id (lower-case letters, digits, '.', '_', '-')")
    label = f"{where} ({entry_id})" if entry_id else where

    kind = EntryKind.CAUSE
    if "kind" in keys:
        kind = reader.choice(keys["kind"][1], f"{label}.kind", EntryKind, "kind") or EntryKind.CAUSE
    failure_type: FailureType | None = None
    if "class" in keys:
        failure_type = reader.choice(keys["class"][1], f"{label}.class", FailureType, "class")
        if failure_type is FailureType.UNKNOWN:
            reader.problem(keys["class"][1], f"{label}.class", "UNKNOWN is the absence of a match, not a class")
        elif kind is EntryKind.ANCHOR and failure_type is not None:
            reader.problem(keys["class"][1], f"{label}.class", "anchors locate a failure and have no class")
    elif kind is not EntryKind.ANCHOR:
        reader.problem(node, f"{label}.class", "missing (only anchors have no class)")

    pattern = reader.string(keys["pattern"][1], f"{label}.pattern") if "pattern" in keys else None
    if pattern is not None and (why := check_pattern(pattern)):
        reader.problem(keys["pattern"][1], f"{label}.pattern", why)
    weight = reader.number(keys["weight"][1], f"{label}.weight", 0.01, 1.0) if "weight" in keys else None
    description = ""
    if "description" in keys:
        description = reader.string(keys["description"][1], f"{label}.description", required_nonempty=False) or ""
    if len(reader.problems) != before or entry_id is None or pattern is None or weight is None:
        return None
    return PatternEntry(id=entry_id, pattern=pattern, failure_type=failure_type, weight=weight,
                        description=description, kind=kind)


def _check_unique(reader: YamlReader, entries: list[PatternEntry], nodes: list[yaml.Node]) -> None:
    import yaml

    first_line: dict[str, int] = {}
    for entry, node in zip(entries, [n for n in nodes if isinstance(n, yaml.MappingNode)], strict=False):
        line = node.start_mark.line + 1
        if entry.id in first_line:
            reader.problem(node, "id", f"duplicate id {entry.id!r} (first used at line {first_line[entry.id]})")
        else:
            first_line[entry.id] = line


@dataclass(frozen=True)
class KnowledgeBase:
    """An ordered, validated set of pattern entries (order has no effect on decisions)."""

    entries: tuple[PatternEntry, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise KnowledgeBaseError([Problem("<knowledge base>", None, "id", f"duplicate id {entry.id!r}")])
            seen.add(entry.id)

    def extended(self, extra: Iterable[PatternEntry]) -> KnowledgeBase:
        """This base plus ``extra`` (a tenant's entries); an extra id may not reuse a bundled one."""
        return KnowledgeBase(self.entries + tuple(extra))

    def by_id(self, entry_id: str) -> PatternEntry:
        return next(e for e in self.entries if e.id == entry_id)

    def to_records(self) -> list[dict[str, object]]:
        """The entries as plain data (JSON), for :meth:`from_records`."""
        return [{"id": e.id, "pattern": e.pattern, "class": e.failure_type.value if e.failure_type else None,
                 "weight": e.weight, "description": e.description, "kind": e.kind.value} for e in self.entries]

    @classmethod
    def from_records(cls, records: Iterable[dict[str, object]]) -> KnowledgeBase:
        """A base from :meth:`to_records` output, trusted as already validated (a cache)."""
        return cls(tuple(PatternEntry(id=str(r["id"]), pattern=str(r["pattern"]),
                                      failure_type=FailureType(str(r["class"])) if r["class"] else None,
                                      weight=float(r["weight"]), description=str(r["description"]),  # type: ignore[arg-type]
                                      kind=EntryKind(str(r["kind"]))) for r in records))

    @cached_property
    def patterns(self) -> Sequence[str]:
        """The patterns as the engines compile them (line-start anchors expanded)."""
        return [expand_anchors(e.pattern) for e in self.entries]


def load_knowledge_base(path: str | Path) -> KnowledgeBase:
    """A knowledge base from a YAML file; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise KnowledgeBaseError([Problem(str(path), None, "", f"cannot read the file: {err}")]) from err
    return KnowledgeBase(tuple(parse_entries(text, str(path))))


@cache
def bundled_knowledge_base() -> KnowledgeBase:
    """The knowledge base shipped with Meta-Builder."""
    return load_knowledge_base(BUNDLED_PATH)


def entries_to_yaml(entries: Iterable[PatternEntry]) -> str:
    """Entries as knowledge-base YAML (what :func:`parse_entries` reads back)."""
    import yaml as _yaml

    records = [{k: v for k, v in r.items() if v not in (None, "") and not (k == "kind" and v == "cause")}
               for r in KnowledgeBase(tuple(entries)).to_records()]
    return _yaml.safe_dump(records, sort_keys=False, allow_unicode=True) if records else ""


_ESCAPE = r"([\\.^$|?*+()\[\]{}])"
_VARYING = r"[0-9]+(\\\.[0-9]+)*|[0-9a-f]{7,}"
_SALIENT = (r"(?i)error|fail|den(y|ied)|refus|reject|forbid|block|not allowed|violat|invalid|cannot|"
           r"can't|unable|missing|exceed|timeout|timed out|panic|exception|fatal|abort")


def propose_pattern(lines: Sequence[str], failure_type: FailureType, entry_id: str) -> PatternEntry | None:
    """A knowledge-base entry proposed from a corrected failure's window: its most telling line
    (the last one that says something failed, else the last line), with regex characters escaped,
    numbers and hex ids made variable, cut to 120 characters. None if no line is usable."""
    candidates = [line.strip() for line in lines if len(line.strip()) >= 8]
    if not candidates:
        return None
    telling = [line for line in candidates if re.search(_SALIENT, line)]
    line = (telling or candidates)[-1][:120]
    pattern = re.sub(_VARYING, "[0-9a-f.]+", re.sub(_ESCAPE, r"\\\1", line))
    if check_pattern(pattern):
        return None
    return PatternEntry(id=entry_id, pattern=pattern, failure_type=failure_type, weight=0.9,
                        description=f"Proposed from a correction: {line}")
