"""The files the LLM fixer is sent, per kind of failure log (real files in a real checkout).

``CASES`` is also what ``bench/bench_llm_context.py`` measures, before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from metabuilder.adapters.llm_context import MAX_FILE_BYTES, MAX_TOTAL_BYTES, Why, gather, resolve

WORKSPACE = {
    "calc/__init__.py": "",
    "calc/core.py": "def add(a, b):\n    return a - b\n\n\ndef half(x):\n    return x / 0\n",
    "calc/fmt.py": "from calc.core import add\n\n\ndef show(a, b):\n    return f'{add(a, b)}'\n",
    "tests/test_core.py": "from calc.core import add\nfrom calc import fmt\n\n\ndef test_add():\n"
                          "    assert add(1, 3) == 4\n",
    "app/util.js": "function add(a, b) {\n  return a - b;\n}\nmodule.exports = { add };\n",
    "app/server.js": "const { add } = require('./util');\nconsole.log(add(1, 2));\n",
    "web/calc.test.js": "const { add } = require('../app/util');\n\ntest('adds', () => {\n"
                        "  expect(add(1, 3)).toBe(4);\n});\n",
    "third_party/licenses.json": '{"pdfmagic": {"license": "AGPL-3.0-only"}}\n',
    "json/decoder.py": "# the project's own module that shares a name with the stdlib's\n",
}
ELSEWHERE = "/var/lib/metabuilder/checkouts/run-7f3a"
"""Where the step ran: another checkout of the same repository."""


@dataclass(frozen=True)
class Case:
    kind: str
    command: str
    evidence: list[str]
    log: str
    expected: list[tuple[str, str]]
    """(path, why) in rank order."""


CASES = [
    Case("pytest assertion (TEST_ASSERT)", "python -m pytest -q",
         ["FAILED tests/test_core.py::test_add - assert -2 == 4"],
         "tests/test_core.py:6: AssertionError\nFAILED tests/test_core.py::test_add - assert -2 == 4\n1 failed\n",
         [("tests/test_core.py", Why.FAILING_TEST), ("calc/core.py", Why.IMPORTED), ("calc/fmt.py", Why.IMPORTED)]),
    Case("python traceback, absolute paths (RUNTIME)", "python -m calc",
         ["ZeroDivisionError: division by zero"],
         "Traceback (most recent call last):\n"
         '  File "/usr/lib/python3.11/runpy.py", line 198, in _run_module_as_main\n'
         f'  File "{ELSEWHERE}/calc/fmt.py", line 5, in show\n'
         f'  File "{ELSEWHERE}/calc/core.py", line 6, in half\n'
         '  File "/usr/lib/python3.11/json/decoder.py", line 1, in x\n'
         "ZeroDivisionError: division by zero\n",
         [("calc/core.py", Why.TRACEBACK), ("calc/fmt.py", Why.TRACEBACK)]),
    Case("node stack trace, absolute paths and file:// URLs (RUNTIME)", "node app/server.js",
         ["TypeError: add is not a function"],
         "TypeError: add is not a function\n"
         f"    at add ({ELSEWHERE}/app/util.js:2:10)\n"
         f"    at Object.<anonymous> (file://{ELSEWHERE}/app/server.js:2:13)\n"
         "    at node:internal/main/run_main_module:28:49\n",
         [("app/util.js", Why.STACK), ("app/server.js", Why.STACK)]),
    Case("jest failure (TEST_ASSERT)", "npx jest",
         ["expect(received).toBe(expected)"],
         "FAIL web/calc.test.js\n  ● adds\n    expect(received).toBe(expected)\n"
         f"      at Object.<anonymous> ({ELSEWHERE}/web/calc.test.js:4:20)\n",
         [("web/calc.test.js", Why.STACK), ("app/util.js", Why.IMPORTED)]),
    Case("mypy (TYPECHECK)", "mypy calc",
         ['calc/core.py:2: error: Unsupported operand types for - ("str" and "int")  [operator]'],
         'calc/core.py:2: error: Unsupported operand types for - ("str" and "int")  [operator]\nFound 1 error\n',
         [("calc/core.py", Why.EVIDENCE)]),
    Case("ruff (LINT)", "ruff check .",
         ["calc/fmt.py:1:23: F401 [*] `calc.core.add` imported but unused"],
         "calc/fmt.py:1:23: F401 [*] `calc.core.add` imported but unused\nFound 1 error.\n",
         [("calc/fmt.py", Why.EVIDENCE)]),
    Case("license checker (UNKNOWN)", "pip-licenses --fail-on AGPL-3.0-only",
         ["fail-on license AGPL-3.0-only was found for package pdfmagic:0.9.1"],
         "fail-on license AGPL-3.0-only was found for package pdfmagic:0.9.1\n",
         []),
]


def make_workspace(root: Path) -> Path:
    for name, text in WORKSPACE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / ".git").mkdir()
    (root / ".git" / "config.py").write_text("secret = 1\n")
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_files_sent_per_kind_of_failure(tmp_path: Path, case: Case) -> None:
    root = make_workspace(tmp_path)
    sent = gather(root, case.command, case.evidence, case.log)
    assert [(f.path, f.why) for f in sent] == case.expected
    for f in sent:
        assert f.text == (root / f.path).read_text() and not f.truncated


@pytest.mark.parametrize(("raw", "expected"), [
    ("calc/core.py", "calc/core.py"),
    ("./calc/core.py", "calc/core.py"),
    (f"{ELSEWHERE}/calc/core.py", "calc/core.py"),
    (f"file://{ELSEWHERE}/app/util.js", "app/util.js"),
    ("file:///somewhere/else/app/has%20no%20such.js", None),
    ("../outside.py", None),
    ("/etc/passwd", None),
    (".git/config.py", None),
    ("/usr/lib/python3.11/json/decoder.py", None),  # the stdlib's, not the project's json/decoder.py
    ("/home/u/.venv/lib/python3.11/site-packages/calc/core.py", None),
])
def test_references_resolve_inside_the_workspace_only(tmp_path: Path, raw: str, expected: str | None) -> None:
    assert resolve(make_workspace(tmp_path).resolve(), raw) == expected


def test_absolute_path_of_this_checkout(tmp_path: Path) -> None:
    root = make_workspace(tmp_path)
    assert resolve(root.resolve(), str(root.resolve() / "calc" / "fmt.py")) == "calc/fmt.py"


def test_big_files_are_cut_around_the_failing_line_and_the_total_is_capped(tmp_path: Path) -> None:
    root = make_workspace(tmp_path)
    lines = [f"value_{i} = {i}" for i in range(20_000)]
    lines[15_000] = "raise RuntimeError('here')"
    (root / "big.py").write_text("\n".join(lines) + "\n")
    for i in range(10):
        (root / f"m{i}.py").write_text("x = 1\n" * 5_000)
    log = (f'  File "{ELSEWHERE}/big.py", line 15001, in <module>\nRuntimeError: here\n'
           + "".join(f"m{i}.py:1: error\n" for i in range(10)))
    sent = gather(root, "python big.py", [], log)
    first = sent[0]
    assert (first.path, first.why, first.truncated) == ("big.py", Why.TRACEBACK, True)
    assert "raise RuntimeError('here')" in first.text and len(first.text.encode()) <= MAX_FILE_BYTES
    assert sum(len(f.text.encode()) for f in sent) <= MAX_TOTAL_BYTES
    assert len(sent) < 11
    assert first.label() == "big.py (traceback frame, cut)"
