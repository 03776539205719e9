"""The real app served by uvicorn on a loopback port, over PostgreSQL and the session's Temporal
dev server; tenants and tokens made with the same functions as the CLI."""

from __future__ import annotations

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

from domain.access import Role
from migrations import upgrade
from store import access
from store.db import make_engine, session_factory, transaction
from worker.devserver import DevServer, free_port, port_open
from worker.settings import Settings


@dataclass(frozen=True)
class LiveApi:
    url: str
    settings: Settings
    """The API process's settings (its task queue prefix and shared repository, for workers)."""
    root: Path
    """Runs may start from workspaces under this directory."""

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
    log = (root / "api.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "metabuilder"), "api", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None, f"the API exited: {(root / 'api.log').read_text()}"
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.1)
    settings = Settings.from_env(env)
    yield LiveApi(url=f"http://127.0.0.1:{port}", settings=settings, root=root)
    proc.terminate()
    proc.wait(10)
    log.close()


def make_tenant(sessions: sessionmaker[Session], name: str | None = None) -> tuple[str, dict[Role, str]]:
    """A new tenant with one user and token per role."""
    tenant = name or f"t-{uuid.uuid4().hex[:8]}"
    with transaction(sessions) as session:
        access.create_tenant(session, tenant)
        tokens = {role: access.create_token(session, tenant, f"{role.value}-user", role).token for role in Role}
    return tenant, tokens
