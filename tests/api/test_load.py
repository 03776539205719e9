"""What made the API collapse under load, each checked without timing (the figures are in
bench/bench_api_load.py): reads that wrote, connections held while responses queued, no bound on
requests in progress, bodies read whole before any limit, and a shutdown that waited for all.

The app is driven over ASGI in this process, on real PostgreSQL and SQLite, so that a test can
hold a request in progress or look at the connection pool at the moment a response starts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.api.app import create_app
from metabuilder.api.config import ApiConfig
from metabuilder.domain.access import Role
from metabuilder.domain.policy import AutofixSettings
from metabuilder.migrations import upgrade
from metabuilder.store.db import make_engine, session_factory
from metabuilder.worker.api_server import SHUTDOWN_GRACE_SECONDS, settled
from metabuilder.worker.devserver import free_port
from tests.api.conftest import make_tenant, metabuilder

RUNS = "/api/meta/v3/runs"


async def _no_temporal() -> Any:
    raise AssertionError("these requests need no Temporal")


def app_on(sessions: sessionmaker[Session], **limits: int) -> FastAPI:
    return create_app(ApiConfig(sessions=sessions, connect=_no_temporal, shared_repo="/nowhere.git",
                                platform=AutofixSettings(True, 6, 3, 60.0), **limits))  # type: ignore[arg-type]


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


class Call:
    """One HTTP request through the ASGI app, with control over when its body arrives."""

    def __init__(self, app: FastAPI, method: str, path: str, token: str | None = None,
                 headers: dict[str, str] | None = None, body: bytes = b"", hold_body: bool = False) -> None:
        raw = {"host": "test", **({"authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        path, _, query = path.partition("?")
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                      "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
                      "root_path": "", "headers": [(k.lower().encode(), v.encode()) for k, v in raw.items()],
                      "client": ("127.0.0.1", 1), "server": ("test", 80)}
        self.app, self.body, self.chunks_read = app, body, 0
        self.release = asyncio.Event()
        if not hold_body:
            self.release.set()
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.content = b""
        self.on_start: list[Any] = []

    async def receive(self) -> dict[str, Any]:
        await self.release.wait()
        self.chunks_read += 1
        return {"type": "http.request", "body": self.body, "more_body": False}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            for hook in self.on_start:
                hook()
        elif message["type"] == "http.response.body":
            self.content += message.get("body", b"")

    async def __call__(self) -> Call:
        await self.app(self.scope, self.receive, self.send)
        return self

    def json(self) -> Any:
        return json.loads(self.content)


@contextlib.asynccontextmanager
async def in_progress(*calls: Call) -> AsyncIterator[list[asyncio.Task[Call]]]:
    tasks = [asyncio.create_task(c()) for c in calls]
    await asyncio.sleep(0.05)  # let them reach their body reads
    try:
        yield tasks
    finally:
        for c in calls:
            c.release.set()
        await asyncio.gather(*tasks)


async def test_a_get_writes_nothing_to_api_tokens_within_the_throttle_window(db: sessionmaker[Session]) -> None:
    _, tokens = make_tenant(db)
    app = app_on(db)
    writes: list[str] = []
    engine = db.kw["bind"]

    def watch(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_tokens" in statement and not statement.lstrip().upper().startswith("SELECT"):
            writes.append(statement)

    assert (await Call(app, "GET", RUNS, tokens[Role.VIEWER])()).status == 200  # first use: last_used_at set
    event.listen(engine, "before_cursor_execute", watch)
    try:
        for _ in range(3):
            assert (await Call(app, "GET", RUNS, tokens[Role.VIEWER])()).status == 200
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert writes == []


async def test_a_request_s_connection_is_back_in_the_pool_before_its_response_is_sent(
        db: sessionmaker[Session]) -> None:
    _, tokens = make_tenant(db)
    app = app_on(db)
    pool = db.kw["bind"].pool
    for path in (RUNS, "/api/meta/v3/plans", "/api/meta/v3/approvals"):
        call = Call(app, "GET", path, tokens[Role.VIEWER])
        held: list[int] = []
        call.on_start.append(lambda: held.append(pool.checkedout()))  # noqa: B023
        assert (await call()).status == 200
        assert held == [0], f"{path}: {held[0]} connection(s) checked out while the response was sent"


async def test_past_the_in_flight_limit_requests_are_refused_at_once_and_healthz_answers(
        api_sessions: sessionmaker[Session]) -> None:
    _, tokens = make_tenant(api_sessions)
    app = app_on(api_sessions, max_in_flight=2)
    held = [Call(app, "POST", "/api/meta/v3/plans", tokens[Role.OPERATOR], body=b'{"yaml": "x"}',
                 headers={"content-type": "application/json", "content-length": "13"}, hold_body=True)
            for _ in range(2)]
    async with in_progress(*held):
        refused = await Call(app, "GET", RUNS, tokens[Role.VIEWER])()
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert "capacity" in refused.json()["detail"]
        health = await Call(app, "GET", "/healthz")()
        assert (health.status, health.json()) == (200, {"status": "ok"})
    assert all(c.status == 422 for c in held)  # they were served once their bodies came
    assert (await Call(app, "GET", RUNS, tokens[Role.VIEWER])()).status == 200


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_limit_is_refused_413_without_being_read_whole(
        api_sessions: sessionmaker[Session], chunked: bool) -> None:
    _, tokens = make_tenant(api_sessions)
    app = app_on(api_sessions)
    chunk = b"x" * (256 * 1024)
    total = 100 * 1024 * 1024
    headers = {"content-type": "application/json", **({} if chunked else {"content-length": str(total)})}
    call = Call(app, "POST", "/api/meta/v3/plans", tokens[Role.OPERATOR], headers=headers, body=chunk)

    async def receive() -> dict[str, Any]:
        call.chunks_read += 1
        return {"type": "http.request", "body": chunk, "more_body": call.chunks_read * len(chunk) < total}

    call.receive = receive  # type: ignore[method-assign]
    await call()
    assert call.status == 413
    assert "at most 4 MiB" in call.json()["detail"]
    assert call.chunks_read * len(chunk) <= 4 * 1024 * 1024 + len(chunk)


def test_sigterm_stops_the_api_within_its_grace_period_with_a_request_in_progress(
        pg_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "META_BUILDER_HOME": str(tmp_path / "home"), "DATABASE_URL": pg_url,
           "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    with metabuilder(["api", "--port", str(port)], env, port, tmp_path / "api.log") as proc, \
            socket.create_connection(("127.0.0.1", port)) as sock:
        # A request whose body never comes stays in progress for as long as the client wants.
        sock.sendall(b"POST /api/meta/v3/plans HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        time.sleep(0.5)
        proc.terminate()
        try:
            proc.wait(SHUTDOWN_GRACE_SECONDS + 10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the API was still running {SHUTDOWN_GRACE_SECONDS + 10}s after SIGTERM")


def test_the_objects_an_api_process_starts_with_are_out_of_the_collector_s_sight(tmp_path: Path) -> None:
    """Full collections walked every module and route object, stopping the loop for about 150 ms
    under load; the app a server is given has them frozen (``gc.freeze``)."""
    gc.unfreeze()
    try:
        app = FastAPI()
        assert settled(app) is app
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen  # the modules of FastAPI, SQLAlchemy, pydantic and this test
        assert len(gc.get_objects(generation=2)) < frozen / 10
    finally:
        gc.unfreeze()
