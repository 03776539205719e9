"""Stopping the embedded dev server by its pid file never signals a process that is not it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from metabuilder.worker.devserver import DevServer, _alive, free_port


def test_a_reused_pid_in_the_pid_file_is_left_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        server = DevServer(tmp_path / "temporal", port=free_port(), ui=False)
        server.data_dir.mkdir(parents=True)
        server.pid_file.write_text(str(bystander.pid))  # the server died; its pid went to `sleep`
        assert server.stop(timeout=2) is False
        assert bystander.poll() is None and _alive(bystander.pid)
        assert not server.pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_server_started_elsewhere_is_stopped_by_its_pid_file(tmp_path: Path) -> None:
    started = DevServer(tmp_path / "temporal", port=free_port(), ui=False)
    started.start(detach=True)
    asyncio.run(started.wait_ready())
    pid = started.process.pid
    later = DevServer(tmp_path / "temporal", port=started.port, ui=False)  # e.g. `metabuilder server stop`
    assert later.stop() is True
    started.process.wait(timeout=10)
    assert not _alive(pid)


def test_a_server_is_recorded_by_its_own_home_only(tmp_path: Path) -> None:
    """The demo and the workers say so when the embedded port is another home's server."""
    mine = DevServer(tmp_path / "a" / "temporal", port=free_port(), ui=False)
    other_home = DevServer(tmp_path / "b" / "temporal", port=mine.port, ui=False)
    assert not mine.recorded_here() and not other_home.recorded_here()
    mine.start(detach=True)
    try:
        asyncio.run(mine.wait_ready())
        assert mine.recorded_here() and not other_home.recorded_here()
    finally:
        mine.stop()
    assert not mine.recorded_here()
