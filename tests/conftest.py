"""Shared fixtures: a real Temporal dev server, real databases, real git repositories."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import psycopg2
import pytest
from temporalio.client import Client

from metabuilder.migrations import upgrade
from metabuilder.store.db import make_engine, session_factory
from metabuilder.worker.devserver import DevServer, free_port
from metabuilder.worker.runtime import POOLS, build_workers, running_workers
from metabuilder.worker.settings import Settings
from tests.fakes.webhook_receiver import Receiver, webhook_receiver

PG_ADMIN_DSN = os.environ.get("META_BUILDER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """One real Temporal dev server (tuned as the embedded default) for the whole session."""
    server = DevServer(tmp_path_factory.mktemp("temporal"), port=free_port(), ui=False)
    server.start(detach=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def client(dev_server: DevServer) -> Client:
    return await dev_server.client()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped when the block ends; yields its SQLAlchemy URL."""
    name = f"mb_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    yield url.replace("postgresql://", "postgresql+psycopg2://", 1)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def settings(tmp_path: Path, dev_server: DevServer) -> Settings:
    """Settings of one test: its own data dir, SQLite DB, shared repo and task queues."""
    base = Settings.from_env({"META_BUILDER_HOME": str(tmp_path / "home")})
    return replace(base, temporal_address=dev_server.address,
                   task_queue_prefix=f"t-{uuid.uuid4().hex[:12]}", heartbeat_timeout_seconds=5.0)


@pytest.fixture
def sessions(settings: Settings):  # type: ignore[no-untyped-def]
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
async def workers(client: Client, settings: Settings, sessions) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
    """Workers for every pool, in this process, on the test's own task queues."""
    async with running_workers(build_workers(client, settings, sessions, POOLS)):
        yield


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    """A user's git repository with one commit on ``main``."""
    repo = tmp_path / "user-repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "README.txt").write_text("hello\n")
    (repo / "app.py").write_text("print('app')\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "initial")
    return repo


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on loopback that checks each delivery's signature."""
    with webhook_receiver() as state:
        yield state
