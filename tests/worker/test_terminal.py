"""Colour goes to a real terminal only, and never with NO_COLOR."""

from __future__ import annotations

import io
import os

import pytest

from metabuilder.worker.terminal import use_color


@pytest.fixture
def terminal():  # type: ignore[no-untyped-def]
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as stream:
        yield stream
    os.close(master)


def test_a_terminal_gets_colour(terminal, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_color(terminal)


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_no_color_turns_it_off(terminal, monkeypatch: pytest.MonkeyPatch, value: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NO_COLOR", value)
    assert not use_color(terminal)


def test_a_pipe_or_file_gets_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not use_color(io.StringIO())


@pytest.mark.parametrize("no_color", [None, "1"])
def test_classify_on_a_terminal_colours_only_without_no_color(tmp_path, no_color: str | None) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    log = tmp_path / "build.log"
    log.write_text("E       assert 2 == 3\nFAILED tests/test_calc.py::test_add - assert 2 == 3\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    if no_color:
        env["NO_COLOR"] = no_color
    master, slave = os.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "metabuilder.worker.cli", "classify", str(log)], stdout=slave,
                              stderr=subprocess.PIPE, env={**env, "META_BUILDER_HOME": str(tmp_path)}, timeout=60)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the pty is closed once everything was read
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert b"TEST_ASSERT" in out
    assert (b"\x1b[" in out) is (no_color is None)
