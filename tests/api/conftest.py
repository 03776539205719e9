"""The real app served by uvicorn on a loopback port, over PostgreSQL and the session's Temporal
dev server; tenants and tokens made with the same functions as the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.access import Role
from metabuilder.migrations import upgrade
from metabuilder.store import access
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.worker.devserver import DevServer, free_port, port_open
from metabuilder.worker.settings import Settings
from tests.conftest import git


@dataclass(frozen=True)
class LiveApi:
    url: str
    settings: Settings
    """The API process's settings (its task queue prefix and shared repository, for workers)."""
    root: Path
    """Runs may start from workspaces under this directory."""
    env: dict[str, str]
    """The API process's environment (for other processes of the same deployment)."""

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An async client: in-process workers share the test's event loop, which must not block."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def api_sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(pg_url)
    engine = make_engine(pg_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def live_api(api_sessions: sessionmaker[Session], pg_url: str, dev_server: DevServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """`metabuilder api` in its own process, as an operator would run it."""
    root = tmp_path_factory.mktemp("api")
    port = free_port()
    env = {**os.environ, "META_BUILDER_HOME": str(root / "home"), "DATABASE_URL": pg_url,
           "TEMPORAL_ADDRESS": dev_server.address, "TEMPORAL_UI_URL": "http://ui.example",
           "META_BUILDER_TASK_QUEUE_PREFIX": f"api-{uuid.uuid4().hex[:8]}",
           "META_BUILDER_SHARED_REPO": str(root / "shared.git"), "META_BUILDER_WORKSPACE_ROOTS": str(root),
           "META_BUILDER_HEARTBEAT_TIMEOUT_SECONDS": "5", "META_BUILDER_ENV": "staging"}
    with metabuilder(["api", "--port", str(port)], env, port, root / "api.log"):
        yield LiveApi(url=f"http://127.0.0.1:{port}", settings=Settings.from_env(env), root=root, env=env)


@dataclass(frozen=True)
class LiveWorker:
    metrics_url: str
    sdk_metrics_url: str
    log: Path


@pytest.fixture(scope="session")
def live_worker(live_api: LiveApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveWorker]:
    """`metabuilder worker` for all pools of the API's deployment, in its own process."""
    port, sdk_port = free_port(), free_port()
    env = {**live_api.env, "META_BUILDER_METRICS_PORT": str(port), "META_BUILDER_SDK_METRICS_PORT": str(sdk_port),
           "META_BUILDER_LOG_FORMAT": "json"}
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with metabuilder(["worker"], env, port, log):
        yield LiveWorker(f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{sdk_port}/metrics", log)


@contextlib.contextmanager
def metabuilder(args: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `metabuilder` command in its own process, ready once ``port`` answers; stopped with SIGTERM."""
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "metabuilder"), *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not port_open("127.0.0.1", port):
                assert proc.poll() is None, f"`metabuilder {args[0]}` exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, f"`metabuilder {args[0]}` did not start: {log_path.read_text()}"
                time.sleep(0.1)
            yield proc
        finally:
            proc.terminate()
            proc.wait(10)


def make_tenant(sessions: sessionmaker[Session], name: str | None = None) -> tuple[str, dict[Role, str]]:
    """A new tenant with one user and token per role."""
    tenant = name or f"t-{uuid.uuid4().hex[:8]}"
    with transaction(sessions) as session:
        access.create_tenant(session, tenant)
        tokens = {role: access.create_token(session, tenant, f"{role.value}-user", role).token for role in Role}
    return tenant, tokens


def workspace(live_api: LiveApi, name: str) -> Path:
    """A new git repository with one commit, where the API may start runs."""
    repo = live_api.root / name
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "app.py").write_text("print('app')\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "initial")
    return repo


async def wait_status(http: httpx.AsyncClient, run_id: str, *statuses: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    """Poll the run through the API until it is in one of ``statuses``; return its body."""
    deadline = time.monotonic() + timeout
    while True:
        run = (await http.get(f"/api/meta/v3/runs/{run_id}")).json()
        if run.get("status") in statuses:
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"run {run_id} is {run.get('status')}, not {statuses}"
        await asyncio.sleep(0.2)
