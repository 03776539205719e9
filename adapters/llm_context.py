"""The files the LLM fixer is shown: found in the failure's log, ranked, and capped by size.

A log names files in many ways: relative paths, absolute paths of the checkout the step ran in
(or of another checkout of the same repository), ``file://`` URLs, Python traceback frames and
node stack frames. Each is resolved to a file inside the workspace. A failing test is followed to
the modules it imports, since the code under test is usually what needs the fix. Frames rank
first (the deepest one where the error was raised), then files the evidence names, failing tests,
what they import, and anything else the log or the command names.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

MAX_FILES = 8
MAX_FILE_BYTES = 24_000
MAX_TOTAL_BYTES = 96_000
"""All files together; a file that does not fit is cut to what is left (or left out)."""
MIN_SLICE_BYTES = 2_000

_EXT = (r"py|pyi|js|mjs|cjs|jsx|ts|tsx|go|rs|java|kt|rb|php|c|h|cc|cpp|hpp|cs|swift|scala|sql|toml|ya?ml|json|"
        r"cfg|ini|txt|md|sh|lock|csv|xml")
_NAMED = re.compile(rf"(?<![\w./-])((?:file://)?/?(?:[\w.@+-]+/)*[\w.@+-]+\.(?:{_EXT}))\b")
_PY_FRAME = re.compile(r'File "([^"]+)", line (\d+)')
_NODE_FRAME = re.compile(r"\bat (?:[^\s(]+ )?\(?((?:file://|/|\.{1,2}/|[\w@-]+/)[^\s():]+):(\d+)(?::\d+)?\)?")
_LOCATION = re.compile(rf"((?:file://)?/?(?:[\w.@+-]+/)*[\w.@+-]+\.(?:{_EXT}))(?::|\()(\d+)")
_FAILED_TEST = re.compile(r"^(?:FAILED|ERROR|FAIL)\s+((?:[\w.@+-]+/)*[\w.@+-]+\.\w+)(?:::|\s|$)", re.M)
_TEST_NAME = re.compile(r"(^|/)(test_[^/]*|[^/]*_test\.\w+|[^/]*\.(test|spec)\.\w+|conftest\.py)$"
                        r"|(^|/)(tests?|__tests__|spec)/")
_JS_IMPORT = re.compile(r"""(?:\bfrom\s*|\brequire\(\s*|\bimport\(\s*|^\s*import\s+)['"](\.{1,2}/[^'"]+)['"]""", re.M)
_JS_EXTS = ("", ".js", ".ts", ".mjs", ".cjs", ".jsx", ".tsx", "/index.js", "/index.ts")
_SKIP_PARTS = frozenset({".git", ".venv", "venv", "node_modules", "site-packages", "dist-packages", "__pycache__",
                         ".tox", ".mypy_cache", ".pytest_cache"})


_SYSTEM = ("/usr/", "/lib/", "/lib64/", "/opt/homebrew/", "/nix/store/", "/System/", "/Library/")
"""Interpreters' and system libraries' files, never the project's even when a tail matches."""
_INTERPRETER = re.compile(r"^(python\d[\d.]*|node-v?\d.*|ruby-?\d.*|jdk.*|go\d.*)$")


class Why:
    """Reasons a file is sent, best first (their order is the ranking)."""

    TRACEBACK = "traceback frame"
    STACK = "stack frame"
    EVIDENCE = "named in the evidence"
    FAILING_TEST = "failing test"
    IMPORTED = "imported by the failing test"
    LOG = "named in the log"
    COMMAND = "named in the command"


_RANK = {Why.TRACEBACK: 0, Why.STACK: 0, Why.EVIDENCE: 1, Why.FAILING_TEST: 2, Why.IMPORTED: 3, Why.LOG: 4,
         Why.COMMAND: 5}


@dataclass(frozen=True)
class ContextFile:
    path: str
    """Relative to the workspace root."""
    why: str
    text: str
    truncated: bool = False

    def label(self) -> str:
        return f"{self.path} ({self.why}{', cut' if self.truncated else ''})"


@dataclass
class _Candidate:
    path: str
    why: str
    order: int
    """Position in the texts: higher (deeper frames, the end of the log) ranks first."""
    line: int | None = None


def resolve(root: Path, raw: str) -> str | None:
    """The workspace-relative path a log's file reference means, or None outside the workspace."""
    raw = raw.strip().strip("'\"")
    if raw.startswith("file://"):
        raw = unquote(urlparse(raw).path)
    path = PurePosixPath(raw)
    if path.is_absolute():
        try:
            return _existing(root, Path(raw).resolve().relative_to(root).as_posix())
        except ValueError:
            pass
        # Another checkout of the same repository (the step ran elsewhere): the longest tail that exists here.
        if _SKIP_PARTS & set(path.parts) or raw.startswith(_SYSTEM) or any(_INTERPRETER.match(p) for p in path.parts):
            return None
        for i in range(1, len(path.parts)):
            if found := _existing(root, PurePosixPath(*path.parts[i:]).as_posix()):
                return found
        return None
    return _existing(root, raw)


def _existing(root: Path, rel: str) -> str | None:
    rel = rel.removeprefix("./")
    full = (root / rel).resolve()
    if not full.is_relative_to(root) or not full.is_file():
        return None
    inside = full.relative_to(root)
    return None if _SKIP_PARTS & set(inside.parts) else inside.as_posix()


def gather(workdir: Path, command: str, evidence: list[str], log_tail: str) -> list[ContextFile]:
    """The files to send, ranked and within the size caps."""
    root = workdir.resolve()
    found: dict[str, _Candidate] = {}

    def add(raw: str, why: str, order: int, line: str | None = None) -> None:
        rel = resolve(root, raw)
        if rel is None:
            return
        old = found.get(rel)
        if old is None or (_RANK[why], -order) < (_RANK[old.why], -old.order):
            found[rel] = _Candidate(rel, why, order, int(line) if line else (old.line if old else None))

    offset = 0
    for why, text in ((Why.COMMAND, command), (Why.LOG, log_tail), (Why.EVIDENCE, "\n".join(evidence))):
        for m in _NAMED.finditer(text):
            add(m.group(1), why, offset + m.start())
        for m in _LOCATION.finditer(text):
            add(m.group(1), why, offset + m.start(), m.group(2))
        for m in _FAILED_TEST.finditer(text):
            add(m.group(1), Why.FAILING_TEST, offset + m.start())
        for m in _PY_FRAME.finditer(text):
            add(m.group(1), Why.TRACEBACK, offset + m.start(), m.group(2))
        for m in _NODE_FRAME.finditer(text):
            # A stack trace starts with its deepest frame, a Python traceback ends with it.
            add(m.group(1), Why.STACK, offset + len(text) - m.start(), m.group(2))
        offset += len(text) + 1
    for cand in [c for c in found.values() if _TEST_NAME.search(c.path)]:
        if cand.why in (Why.LOG, Why.COMMAND, Why.EVIDENCE):
            cand.why = Why.FAILING_TEST
        for rel in _imports(root, cand.path):
            if rel not in found:
                found[rel] = _Candidate(rel, Why.IMPORTED, cand.order)
    ranked = sorted(found.values(), key=lambda c: (_RANK[c.why], -c.order))
    return _within_caps(root, ranked)


def _within_caps(root: Path, ranked: list[_Candidate]) -> list[ContextFile]:
    out: list[ContextFile] = []
    left = MAX_TOTAL_BYTES
    for cand in ranked:
        if len(out) >= MAX_FILES or left < MIN_SLICE_BYTES:
            break
        data = (root / cand.path).read_bytes()
        cap = min(MAX_FILE_BYTES, left)
        text, cut = _slice(data, cap, cand.line)
        out.append(ContextFile(cand.path, cand.why, text, cut))
        left -= len(text.encode())
    return out


def _slice(data: bytes, cap: int, line: int | None) -> tuple[str, bool]:
    """The file, or the ``cap`` bytes of it around ``line`` (from the top without one)."""
    if len(data) <= cap:
        return data.decode("utf-8", errors="replace"), False
    start = 0
    if line:
        at = sum(len(x) for x in data.splitlines(keepends=True)[:line - 1])
        start = max(0, min(at - cap // 2, len(data) - cap))
        start = data.rfind(b"\n", 0, start) + 1 if start else 0
    return data[start:start + cap].decode("utf-8", errors="replace"), True


def _imports(root: Path, test: str) -> list[str]:
    """Workspace files a test file imports (Python by its syntax tree, JS/TS by its import lines)."""
    source = (root / test).read_text(encoding="utf-8", errors="replace")
    here = PurePosixPath(test).parent
    if test.endswith((".py", ".pyi")):
        return _python_imports(root, source, here)
    if re.search(r"\.(m|c)?[jt]sx?$", test):
        out = []
        for m in _JS_IMPORT.finditer(source):
            base = (here / m.group(1)).as_posix()
            for ext in _JS_EXTS:
                if (rel := _existing(root, base + ext)) is not None:
                    out.append(rel)
                    break
        return out
    return []


def _python_imports(root: Path, source: str, here: PurePosixPath) -> list[str]:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    modules: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules += [(0, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            modules.append((node.level, module))
            modules += [(node.level, f"{module}.{a.name}" if module else a.name) for a in node.names]
    out: list[str] = []
    for level, name in modules:
        if not name:
            continue
        parts = name.split(".")
        if level > len(here.parts) + 1:
            continue
        # Absolute imports from the root, a src/ layout or the test's own folder; relative ones from theirs.
        bases = [here.parents[level - 2] if level > 1 else here] if level else [PurePosixPath("."),
                                                                                  PurePosixPath("src"), here]
        for base in bases:
            stem = base.joinpath(*parts)
            for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
                if (rel := _existing(root, candidate)) is not None and rel not in out:
                    out.append(rel)
    return [rel for rel in out if not rel.endswith("__init__.py") or (root / rel).stat().st_size > 0]
