"""API conventions (issue 22): problem+json errors keeping ``detail``, pagination in headers,
explicit stable operation ids, ``/readyz``, the app factory in a real uvicorn process, and the
API process's logs as JSON (uvicorn's tracebacks and access lines included)."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.api.app import create_app
from metabuilder.api.config import ApiConfig
from metabuilder.api.deps import TokenCache
from metabuilder.api.openapi import OPERATION_IDS
from metabuilder.domain.access import Principal, Role
from metabuilder.domain.payloads import RunRecord
from metabuilder.domain.plans import parse_plan
from metabuilder.domain.policy import AutofixSettings
from metabuilder.domain.runs import RunStatus
from metabuilder.migrations import upgrade
from metabuilder.store import repository
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.worker.api_server import FACTORY, SHUTDOWN_GRACE_SECONDS
from metabuilder.worker.devserver import DevServer, free_port, port_open
from tests.api.conftest import make_tenant
from tests.api.test_load import Call, app_on

V3 = "/api/meta/v3"
PLAN = "name: conv\nsteps:\n  - {name: lint, command: 'true'}\n"
IDS_FILE = Path(__file__).with_name("operation_ids.txt")


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def seed_runs(sessions: sessionmaker[Session], tenant: str, count: int,
              status: RunStatus = RunStatus.SUCCEEDED) -> list[str]:
    plan = parse_plan(PLAN)
    ids = [f"{tenant}-{status.value}-{i}" for i in range(count)]
    with transaction(sessions) as session:
        for run_id in ids:
            repository.record_run(session, RunRecord(
                run_id=run_id, tenant=tenant, status=status, plan=plan, plan_source=PLAN,
                workflow_id=f"build-run-{run_id}", repo_url="/nowhere.git", branch=f"metabuilder/runs/{run_id}",
                base_commit="a" * 40, head_commit="b" * 40))
    return ids


def assert_problem(call: Call, status: int, path: str) -> dict[str, Any]:
    assert call.status == status, call.content
    assert call.headers["content-type"] == "application/problem+json"
    problem = call.json()
    assert problem["type"] == "about:blank" and problem["status"] == status and problem["instance"] == path
    assert problem["title"] and problem["detail"]
    return problem  # type: ignore[no-any-return]


async def test_errors_are_problem_details_that_keep_detail(sqlite_db: sessionmaker[Session]) -> None:
    _, tokens = make_tenant(sqlite_db)
    app = app_on(sqlite_db)
    problem = assert_problem(await Call(app, "GET", f"{V3}/runs/nope", tokens[Role.VIEWER])(), 404, f"{V3}/runs/nope")
    assert problem["title"] == "Not Found" and problem["detail"] == "unknown run id 'nope'"
    assert "unknown or revoked" in assert_problem(await Call(app, "GET", f"{V3}/runs", "mb_nope")(), 401,
                                                  f"{V3}/runs")["detail"]
    invalid = assert_problem(await Call(app, "GET", f"{V3}/runs?limit=0", tokens[Role.VIEWER])(), 422, f"{V3}/runs")
    assert invalid["detail"].startswith("query.limit: ") and invalid["errors"][0]["loc"] == ["query", "limit"]
    assert "unknown query parameter 'limt'" in assert_problem(
        await Call(app, "GET", f"{V3}/runs?limt=1", tokens[Role.VIEWER])(), 422, f"{V3}/runs")["detail"]
    assert assert_problem(await Call(app, "GET", f"{V3}/runs?limit=2&limit=3", tokens[Role.VIEWER])(), 422,
                          f"{V3}/runs")["detail"] == "query parameter 'limit' given more than once (it takes one value)"
    broken = Call(app, "POST", f"{V3}/plans", tokens[Role.OPERATOR], body=b"{",
                  headers={"content-type": "application/json"})
    assert "JSON decode error" in assert_problem(await broken(), 422, f"{V3}/plans")["detail"]
    # Answered by the middleware, before the app: the same format.
    big = Call(app, "POST", f"{V3}/plans", tokens[Role.OPERATOR], headers={"content-length": str(10**9)})
    assert "over the limit" in assert_problem(await big(), 413, f"{V3}/plans")["detail"]
    shed = await Call(app_on(sqlite_db, max_in_flight=0), "GET", f"{V3}/runs", tokens[Role.VIEWER])()
    assert "at capacity" in assert_problem(shed, 503, f"{V3}/runs")["detail"] and shed.headers["retry-after"] == "1"


async def test_an_unexpected_error_is_a_problem_too(sqlite_db: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(sqlite_db)
    app = app_on(sqlite_db)
    seed_runs(sqlite_db, tenant, 1)
    with sqlite3.connect(sqlite_db.kw["bind"].url.database) as raw:
        raw.execute("DROP TABLE build_steps")  # the schema is not what the code expects
    path = f"{V3}/runs/{tenant}-succeeded-0/logs"
    call = Call(app, "GET", path, tokens[Role.VIEWER])
    with pytest.raises(Exception, match="build_steps"):  # raised again after the answer, for the server's log
        await call()
    problem = assert_problem(call, 500, path)
    assert "build_steps" not in problem["detail"] and "internal error" in problem["detail"]


async def test_lists_link_to_their_next_page_and_keep_their_body(sqlite_db: sessionmaker[Session]) -> None:
    tenant, tokens = make_tenant(sqlite_db)
    succeeded = seed_runs(sqlite_db, tenant, 5)
    seed_runs(sqlite_db, tenant, 2, RunStatus.FAILED)
    app = app_on(sqlite_db)
    seen: list[str] = []
    path: str | None = f"{V3}/runs?status=succeeded&limit=2"
    pages = 0
    while path is not None:
        page = await Call(app, "GET", path, tokens[Role.VIEWER])()
        assert page.status == 200 and isinstance(page.json(), list)  # the body is the list, as before
        seen += [r["run_id"] for r in page.json()]
        pages += 1
        link = page.headers.get("link")
        path = httpx.Response(200, headers={"link": link}).links["next"]["url"] if link else None
        if path is not None:
            assert "status=succeeded" in path and "limit=2" in path
    assert pages == 3 and sorted(seen) == sorted(succeeded)
    # A last page that is exactly full has no next link: the query asked for one row more.
    full = await Call(app, "GET", f"{V3}/runs?status=failed&limit=2", tokens[Role.VIEWER])()
    assert len(full.json()) == 2 and "link" not in full.headers
    plans = await Call(app, "GET", f"{V3}/plans?limit=1", tokens[Role.VIEWER])()
    assert len(plans.json()) == 1 and "link" not in plans.headers  # all the runs have one plan


def test_operation_ids_are_explicit_unique_and_stable() -> None:
    app = create_app(ApiConfig(sessions=None, connect=None, shared_repo="/x",  # type: ignore[arg-type]
                               platform=AutofixSettings(True, 6, 3, 60.0)))
    doc = app.openapi()
    served = {(method.upper(), path): op["operationId"] for path, item in doc["paths"].items()
              for method, op in item.items()}
    ids = list(served.values())
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert served == OPERATION_IDS  # every operation has its written id, and every written id is served
    published = sorted(line for line in IDS_FILE.read_text().splitlines() if line.strip())
    assert sorted(f"{method} {path} {op}" for (method, path), op in served.items()) == published, (
        f"an operation id changed: clients generated from the document name methods after them; "
        f"if it is meant, update {IDS_FILE.name}")
    # Error bodies are documented with the media type they are sent with.
    errors = doc["paths"][f"{V3}/runs/{{run_id}}"]["get"]["responses"]["404"]["content"]
    assert list(errors) == ["application/problem+json"]
    assert list(doc["paths"][f"{V3}/runs/{{run_id}}"]["get"]["responses"]["200"]["content"]) == ["application/json"]


def test_a_route_without_an_operation_id_is_refused() -> None:
    from fastapi import APIRouter

    from metabuilder.api.openapi import operation_id

    router = APIRouter(generate_unique_id_function=operation_id)
    with pytest.raises(LookupError, match="no operation id for GET /api/meta/v3/new-thing"):
        router.add_api_route(f"{V3}/new-thing", lambda: None, methods=["GET"])


async def test_readyz_names_what_is_down(sqlite_db: sessionmaker[Session], dev_server: DevServer) -> None:
    async def no_temporal() -> Any:
        raise ConnectionError("connection refused")

    down = create_app(ApiConfig(sessions=sqlite_db, connect=no_temporal, shared_repo="/x",
                                platform=AutofixSettings(True, 6, 3, 60.0)))
    problem = assert_problem(await Call(down, "GET", "/readyz")(), 503, "/readyz")
    assert problem["checks"] == {"database": "ok", "temporal": "Temporal cannot be reached: connection refused"}
    assert problem["detail"] == "not ready: temporal: Temporal cannot be reached: connection refused"
    assert (await Call(down, "GET", "/healthz")()).status == 200  # liveness does not depend on them

    from temporalio.client import Client

    no_db = session_factory(make_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/none"))
    both = create_app(ApiConfig(sessions=no_db, connect=no_temporal, shared_repo="/x",
                                platform=AutofixSettings(True, 6, 3, 60.0)))
    problem = assert_problem(await Call(both, "GET", "/readyz")(), 503, "/readyz")
    assert "OperationalError" in problem["checks"]["database"] and "database: " in problem["detail"]
    assert "temporal: " in problem["detail"]

    up = create_app(ApiConfig(sessions=sqlite_db, connect=lambda: Client.connect(dev_server.address),
                              shared_repo="/x", platform=AutofixSettings(True, 6, 3, 60.0)))
    ready = await Call(up, "GET", "/readyz")()
    assert ready.status == 200 and ready.json() == {"status": "ready", "checks": {"database": "ok", "temporal": "ok"}}


def test_the_token_cache_forgets_after_its_ttl_and_stays_bounded() -> None:
    who = Principal(tenant="t", user="u", role=Role.VIEWER)
    cache = TokenCache(ttl=0.2, max_entries=3)
    cache.put("a", who)
    assert cache.get("a") == who and cache.get("b") is None
    time.sleep(0.25)
    assert cache.get("a") is None
    for token in "bcde":
        cache.put(token, who)
    assert len(cache._entries) <= 3 and cache.get("e") == who
    off = TokenCache(ttl=0)
    off.put("a", who)
    assert off.get("a") is None


@contextlib.contextmanager
def serving(cmd: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90  # a cold start on the shared machine can take 20 s
            while not (port_open("127.0.0.1", port) and _healthy(port)):
                assert proc.poll() is None, f"{cmd} exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"{cmd} did not start: {log.read_text()}"
                time.sleep(0.2)
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _stop_within_grace(proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    proc.terminate()
    try:
        proc.wait(SHUTDOWN_GRACE_SECONDS + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {SHUTDOWN_GRACE_SECONDS + 5} s after SIGTERM")
    return time.monotonic() - started


def _api_env(tmp_path: Path, url: str) -> dict[str, str]:
    return {**os.environ, "META_BUILDER_HOME": str(tmp_path / "home"), "DATABASE_URL": url,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "META_BUILDER_LOG_FORMAT": "json"}


def test_the_factory_serves_under_uvicorn_with_json_logs(tmp_path: Path) -> None:
    """``uvicorn --factory`` as an operator runs it (uvicorn's own default log config on its
    command line): every line of the process's output is a JSON event, the access lines and the
    traceback of a failed request included."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    tenant, tokens = make_tenant(sessions)
    [run_id] = seed_runs(sessions, tenant, 1)
    port, log = free_port(), tmp_path / "uvicorn.log"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", FACTORY, "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, _api_env(tmp_path, url), port, log) as proc:
        headers = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
        listed = httpx.get(f"http://127.0.0.1:{port}{V3}/runs", headers=headers, timeout=10)
        assert listed.status_code == 200 and [r["run_id"] for r in listed.json()] == [run_id]
        with sqlite3.connect(tmp_path / "api.db") as raw:
            raw.execute("DROP TABLE build_steps")
        crashed = httpx.get(f"http://127.0.0.1:{port}{V3}/runs/{run_id}/logs", headers=headers, timeout=10)
        assert crashed.status_code == 500 and crashed.headers["content-type"] == "application/problem+json"
        assert "build_steps" not in crashed.text  # the why is in the log, not in the answer
        assert _stop_within_grace(proc) < SHUTDOWN_GRACE_SECONDS + 5
    events = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]  # each line is JSON
    access = [e for e in events if e["event"] == "http.request"]
    assert {(e["method"], e["path"], e["status"]) for e in access} >= {
        ("GET", f"{V3}/runs", 200), ("GET", f"{V3}/runs/{run_id}/logs", 500)}
    [failure] = [e for e in events if e["logger"] == "uvicorn.error" and e["level"] == "error"]
    assert "Traceback" in failure["exception"] and "no such table: build_steps" in failure["exception"]
    assert all("color_message" not in e and "positional_args" not in e for e in events)


def test_api_processes_share_the_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    tenant, tokens = make_tenant(session_factory(make_engine(url)))
    port, log = free_port(), tmp_path / "api.log"
    env = {**_api_env(tmp_path, url), "META_BUILDER_API_ACCESS_LOG": "false"}
    cmd = [str(Path(sys.executable).parent / "metabuilder"), "api", "--port", str(port), "--workers", "2"]
    with serving(cmd, env, port, log) as proc:
        time.sleep(1)  # both processes accept by now: the port answers once the first one does
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(20):
                me = http.get(f"{V3}/me", headers={"Authorization": f"Bearer {tokens[Role.ADMIN]}"})
                assert me.json() == {"tenant": tenant, "user": "admin-user", "role": "admin"}
        _stop_within_grace(proc)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    started = {e["event"] for e in events if e["event"].startswith("Started server process")}
    assert len(started) == 2, events
    assert not [e for e in events if e["event"] == "http.request"]  # META_BUILDER_API_ACCESS_LOG=false
