"""``metabuilder classify`` as a user runs it: no server or database needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
OWN = ROOT / "tests" / "corpus" / "own"
HOME: dict[str, Path] = {}


@pytest.fixture(autouse=True, scope="module")
def _home(tmp_path_factory):
    # One home for the module: the compiled knowledge base is cached there after the first call.
    HOME["path"] = tmp_path_factory.mktemp("home")


def classify(*args: str, stdin: bytes | None = None, home: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", "classify", *args], cwd=ROOT, input=stdin,
                          capture_output=True, timeout=60,
                          env={**os.environ, "META_BUILDER_HOME": str(home or HOME["path"])})


def test_json_lines_one_per_file():
    files = [OWN / "mypy" / "fail.log", OWN / "curl-429-retry-after" / "fail.log"]
    res = classify("--json", *map(str, files))
    assert res.returncode == 0, res.stderr
    first, second = (json.loads(line) for line in res.stdout.decode().splitlines())
    assert first["type"] == "TYPECHECK" and first["file"] == str(files[0])
    assert second["type"] == "RATE_LIMIT" and second["retry_after"] == 30
    assert {"confidence", "evidence", "fingerprint", "patterns"} <= first.keys()
    assert all({"line", "text"} <= e.keys() for e in first["evidence"])


def test_stdin_with_exit_code_and_human_output():
    res = classify("-", "--exit-code", "137", stdin=b"compiling...\nKilled\n")
    out = res.stdout.decode()
    assert res.returncode == 0
    assert out.startswith("-: INFRA (confidence")
    assert "Killed" in out and "exit 137" in out


def test_eval_prints_the_measures():
    res = classify("--eval", str(OWN))
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr
    assert "macro-F1" in out and "accuracy" in out and "label \\ predicted" in out
    assert "TEST_ASSERT" in out
    assert "leave-tools-out (5 folds" in out and "misclassified leave-tools-out" in out


def test_bad_input_exits_2_and_says_what_is_wrong(tmp_path):
    assert b"/no/such.log: no such file" in classify("/no/such.log").stderr
    bad = tmp_path / "extra.yaml"
    bad.write_text("- {id: team.x, class: LINT, pattern: '(', weight: 0.5}\n")
    res = classify("--patterns", str(bad), str(OWN / "mypy" / "fail.log"))
    assert res.returncode == 2
    assert f"{bad}:1: [0] (team.x).pattern: not a valid regular expression".encode() in res.stderr
    assert classify().returncode == 2


def test_extra_patterns_change_the_answer(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("- {id: team.flaky-fixture, class: TRANSIENT, pattern: 'fixture server not ready', "
                     "weight: 0.95, description: Our fixture server starts slowly.}\n")
    log = b"starting\nERROR: fixture server not ready after 30s\n"
    assert b"UNKNOWN" in classify("-", stdin=log).stdout
    assert b"TRANSIENT" in classify("--patterns", str(extra), "-", stdin=log).stdout


def test_an_unwritable_home_still_classifies():
    res = classify(str(OWN / "mypy" / "fail.log"), home=Path("/nonexistent/home"))
    assert res.returncode == 0, res.stderr
    assert b"TYPECHECK" in res.stdout


def test_the_compiled_knowledge_base_is_cached_by_content(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("- {id: team.fixture, class: TRANSIENT, pattern: 'fixture server not ready', weight: 0.95}\n")
    log = b"ERROR: fixture server not ready after 30s\n"
    cache = tmp_path / "kb-cache"
    assert b"TRANSIENT" in classify("--patterns", str(extra), "-", stdin=log, home=tmp_path).stdout
    first = sorted(p.name for p in cache.iterdir())
    assert len(first) == 3  # entries (JSON) and the two Hyperscan databases
    assert b"TRANSIENT" in classify("--patterns", str(extra), "-", stdin=log, home=tmp_path).stdout
    assert sorted(p.name for p in cache.iterdir()) == first  # a hit: nothing new written

    extra.write_text("- {id: team.fixture, class: INFRA, pattern: 'fixture server not ready', weight: 0.95}\n")
    assert b"INFRA" in classify("--patterns", str(extra), "-", stdin=log, home=tmp_path).stdout
    assert len(list(cache.iterdir())) == 6  # the edit is a new key

    for stale in cache.glob("*.hs"):
        stale.write_bytes(b"not a database")
    res = classify("--patterns", str(extra), "-", stdin=log, home=tmp_path)
    assert res.returncode == 0 and b"INFRA" in res.stdout, res.stderr


@pytest.mark.parametrize("argv", [["--help"], ["classify", str(OWN / "mypy" / "fail.log")]])
def test_help_and_classify_import_no_server_side_libraries(argv):
    probe = ("import sys, contextlib, io\n"
             "from metabuilder.worker.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try:\n"
             f"        main({argv!r})\n"
             "    except SystemExit:\n"
             "        pass\n"
             "heavy = ('fastapi', 'sqlalchemy', 'temporalio.client', 'structlog', 'httpx')\n"
             "print(sorted(m for m in heavy if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "META_BUILDER_HOME": str(HOME["path"])})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_terminal_control_sequences_in_a_log_are_escaped(tmp_path):
    log = tmp_path / "e\x1b[2Jvil.log"
    log.write_bytes(b"curl: (7) Failed to connect to localhost port 5432: \x1bcConnection refused \x1b7 "
                    b"\xc2\x9b2J \x07 bs\x08\x08\x7f\n")
    for args in ((), ("--json",)):
        out = classify(*args, str(log)).stdout.decode()
        assert "Connection refused" in out
        assert all(c.isprintable() for line in out.splitlines() for c in line), repr(out)
    assert "\\x1bcConnection refused \\x1b7 \\x9b2J \\x07 bs\\x08\\x08\\x7f" in classify(str(log)).stdout.decode()
