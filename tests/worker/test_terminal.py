"""Colour goes to a real terminal only, and never with NO_COLOR."""

from __future__ import annotations

import io
import os

import pytest

from worker.terminal import use_color


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
