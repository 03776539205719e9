"""`metabuilder run` follows a real run: how long a running step has run is shown as it runs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from temporalio.client import Client

from metabuilder.domain.runs import RunStatus
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.worker.cli import follow as follow_module
from metabuilder.worker.cli.follow import follow
from metabuilder.worker.settings import Settings

SLOW = "name: slow\nsteps:\n  - name: wait\n    command: sleep 3 && echo done\n"


async def _start(client: Client, settings: Settings, repo: Path):  # type: ignore[no-untyped-def]
    opts = SubmitOptions.of(settings)
    return await submit(client, SLOW, "plan.yaml", repo, opts)


async def test_elsewhere_a_running_step_is_reported_every_so_often(
        client: Client, settings: Settings, workers: None, user_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow_module, "PROGRESS_EVERY", 1)
    out = io.StringIO()
    view = await follow((await _start(client, settings, user_repo)).handle, out=out, poll_seconds=0.3)
    assert view.status is RunStatus.SUCCEEDED
    text = out.getvalue()
    assert "… wait still running after 1s" in text and "… wait still running after 2s" in text
    assert "\x1b" not in text  # no terminal control where there is no terminal


async def test_on_a_terminal_the_elapsed_time_is_one_line_rewritten(
        client: Client, settings: Settings, workers: None, user_repo: Path) -> None:
    master, slave = os.openpty()
    os.set_blocking(master, False)
    with os.fdopen(slave, "w") as terminal:
        view = await follow((await _start(client, settings, user_repo)).handle, out=terminal, poll_seconds=0.3)
        chunks = []
        while True:
            try:
                chunks.append(os.read(master, 65536))
            except BlockingIOError:
                break
    os.close(master)
    assert view.status is RunStatus.SUCCEEDED
    text = b"".join(chunks).decode()
    assert "\r\x1b[K      … running: wait 2s" in text
    assert "still running after" not in text
    assert text.rstrip().splitlines()[-1].lstrip("\r\x1b[K").strip().startswith("✓ wait")
