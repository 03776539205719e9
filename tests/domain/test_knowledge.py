"""The knowledge base is data: validated with line numbers, portable to every engine and grep."""

from __future__ import annotations

import subprocess

import pytest

from metabuilder.domain.knowledge import (
    EntryKind,
    KnowledgeBaseError,
    PatternEntry,
    bundled_knowledge_base,
    check_pattern,
    expand_anchors,
    parse_entries,
)
from metabuilder.domain.scanner import HyperscanEngine
from metabuilder.domain.taxonomy import FailureType

KB = bundled_knowledge_base()


def test_bundled_base_covers_every_class_and_has_anchors():
    classes = {e.failure_type for e in KB.entries if e.kind is not EntryKind.ANCHOR}
    assert classes == set(FailureType) - {FailureType.UNKNOWN}
    assert any(e.kind is EntryKind.ANCHOR for e in KB.entries)
    assert all(e.description for e in KB.entries)


def test_bundled_patterns_compile_in_hyperscan():
    HyperscanEngine(KB)


def test_bundled_patterns_are_accepted_by_grep_without_warnings(tmp_path):
    patterns = tmp_path / "patterns"
    patterns.write_text("\n".join(KB.patterns) + "\n")
    sample = tmp_path / "log"
    sample.write_bytes(b"FAILED tests/test_a.py::test_x - assert 1 == 2\nok\nNo space left on device\n")
    proc = subprocess.run(["grep", "-E", "-c", "-f", str(patterns), str(sample)], capture_output=True,
                          env={"LC_ALL": "C"})
    assert proc.stderr == b""
    assert proc.stdout.strip() == b"2"


GOOD = """\
- id: team.flaky-db
  class: TRANSIENT
  pattern: 'deadlock detected'
  weight: 0.8
  description: Our test database deadlocks under load.
"""


def test_parse_entries():
    [entry] = parse_entries(GOOD)
    assert entry == PatternEntry("team.flaky-db", "deadlock detected", FailureType.TRANSIENT, 0.8,
                                 "Our test database deadlocks under load.")
    assert KB.extended([entry]).by_id("team.flaky-db") is entry


@pytest.mark.parametrize(("text", "expected"), [
    ("- {id: a, class: NOPE, pattern: x, weight: 0.5}", "t.yaml:1: [0] (a).class: unknown class 'NOPE'"),
    ("- {id: a, class: LINT, pattern: '[0-9', weight: 0.5}",
     "t.yaml:1: [0] (a).pattern: not a valid regular expression"),
    ("- {id: a, class: LINT, pattern: 'x\\\\d', weight: 0.5}", "write [0-9]"),
    ("- {id: a, class: LINT, pattern: '(?i)x', weight: 0.5}", "not portable"),
    ("- {id: a, class: LINT, pattern: 'x*', weight: 0.5}", "matches the empty line"),
    ("- {id: a, class: LINT, pattern: x, weight: 3}", "[0] (a).weight: expected a number from 0.01 to 1"),
    ("- {id: a, class: LINT, pattern: x}", "t.yaml:1: [0].weight: missing"),
    ("- {id: a, pattern: x, weight: 1}", "only anchors have no class"),
    ("- {id: a, kind: anchor, class: LINT, pattern: x, weight: 1}", "anchors locate a failure and have no class"),
    ("- {id: a, class: UNKNOWN, pattern: x, weight: 1}", "UNKNOWN is the absence of a match"),
    ("- {id: A B, class: LINT, pattern: x, weight: 1}", "is not a valid id"),
    ("- {id: a, class: LINT, pattern: x, weight: 1, colour: red}", "[0].colour: unknown key"),
    ("- {id: a, class: LINT, pattern: x, weight: 1}\n- {id: a, class: LINT, pattern: y, weight: 1}",
     "t.yaml:2: id: duplicate id 'a' (first used at line 1)"),
    ("id: a", "expected a list of pattern entries"),
    ("- [unclosed", "t.yaml:1: not valid YAML"),
])
def test_bad_entries_are_reported_with_file_and_line(text, expected):
    with pytest.raises(KnowledgeBaseError) as err:
        parse_entries(text, "t.yaml")
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once():
    text = "- {id: a, class: NOPE, pattern: x, weight: 1}\n- {id: b, class: LINT, pattern: '(', weight: 1}\n"
    with pytest.raises(KnowledgeBaseError) as err:
        parse_entries(text, "t.yaml")
    assert [p.line for p in err.value.problems] == [1, 2]


def test_an_extra_entry_may_not_reuse_a_bundled_id():
    [entry] = parse_entries(GOOD.replace("team.flaky-db", "disk.full"))
    with pytest.raises(KnowledgeBaseError, match="duplicate id 'disk.full'"):
        KB.extended([entry])


def test_check_pattern_accepts_the_portable_dialect():
    assert check_pattern(r"^\s*FAILED [^ ]+\.py::\w+ (x|y){1,3}\b") is None


def test_expand_anchors_only_touches_line_starts():
    assert expand_anchors("[^ ]+x") == "[^ ]+x"
    assert expand_anchors(r"\^x") == r"\^x"
    assert expand_anchors("^x").startswith("^((")
