"""Worker processes for the tests that kill them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metabuilder.worker.settings import Settings

ROOT = Path(__file__).parent.parent.parent


def start_worker(settings: Settings, address: str, log: Path,
                 extra_env: dict[str, str] | None = None, args: list[str] | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(extra_env or {}), "TEMPORAL_ADDRESS": address, "META_BUILDER_HOME": str(settings.home),
           "META_BUILDER_TASK_QUEUE_PREFIX": settings.task_queue_prefix, "META_BUILDER_LOG_LEVEL": "warning",
           # Off: a fixed port may be taken by another worker on the machine.
           "META_BUILDER_METRICS_PORT": "0", "META_BUILDER_SDK_METRICS_PORT": "0"}
    env.pop("DATABASE_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "metabuilder.worker.cli", "worker", *(args or [])],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


async def wait_for_file(path: Path, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.05)
