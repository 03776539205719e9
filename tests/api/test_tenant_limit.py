"""A tenant's limit on concurrent runs (META_BUILDER_TENANT_MAX_ACTIVE_RUNS): a submission beyond it
is refused with 409 problem+json; other tenants are not affected; a run that ends frees its place."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from metabuilder.domain.access import Role
from metabuilder.domain.runs import workflow_id
from metabuilder.worker.devserver import DevServer, free_port
from metabuilder.worker.settings import Settings
from tests.api.conftest import LiveApi, make_tenant, metabuilder, workspace

PLAN = "name: limited\nsteps:\n  - name: a\n    command: echo a\n"


@pytest.fixture(scope="module")
def limited_api(api_sessions: sessionmaker[Session], pg_url: str, dev_server: DevServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """An API whose tenants may have one run open at a time (no workers: a run stays open)."""
    root = tmp_path_factory.mktemp("limited")
    port = free_port()
    env = {**os.environ, "META_BUILDER_HOME": str(root / "home"), "DATABASE_URL": pg_url,
           "TEMPORAL_ADDRESS": dev_server.address, "META_BUILDER_TASK_QUEUE_PREFIX": f"lim-{uuid.uuid4().hex[:8]}",
           "META_BUILDER_SHARED_REPO": str(root / "shared.git"), "META_BUILDER_WORKSPACE_ROOTS": str(root),
           "META_BUILDER_TENANT_MAX_ACTIVE_RUNS": "1"}
    with metabuilder(["api", "--port", str(port)], env, port, root / "api.log"):
        yield LiveApi(url=f"http://127.0.0.1:{port}", settings=Settings.from_env(env), root=root, env=env)


async def _submit(http: httpx.AsyncClient, repo: Path) -> httpx.Response:
    return await http.post("/api/meta/v3/runs", json={"plan_yaml": PLAN, "workspace": str(repo)})


async def test_a_tenant_at_its_limit_is_refused_until_a_run_ends(
        limited_api: LiveApi, api_sessions: sessionmaker[Session], client: Client) -> None:
    tenant, tokens = make_tenant(api_sessions)
    other, other_tokens = make_tenant(api_sessions)
    repo = workspace(limited_api, f"ws-{tenant}")
    async with limited_api.client(tokens[Role.OPERATOR]) as http, \
            limited_api.client(other_tokens[Role.OPERATOR]) as other_http:
        first = await _submit(http, repo)
        assert first.status_code == 202, first.text
        refused = await _submit(http, repo)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert "has 1 runs in progress" in problem["detail"]
        assert "META_BUILDER_TENANT_MAX_ACTIVE_RUNS=1" in problem["detail"]
        # Another tenant has its own count.
        theirs = await _submit(other_http, workspace(limited_api, f"ws-{other}"))
        assert theirs.status_code == 202, theirs.text

        await client.get_workflow_handle(workflow_id(first.json()["run_id"])).terminate("test: end it")
        for _ in range(50):  # visibility follows the termination within moments
            again = await _submit(http, repo)
            if again.status_code == 202:
                break
            assert again.status_code == 409
            await asyncio.sleep(0.2)
        assert again.status_code == 202, again.text
        for run in (theirs, again):
            await client.get_workflow_handle(workflow_id(run.json()["run_id"])).terminate("test: done")


async def test_the_tenant_budgets_concurrent_runs_set_its_own_limit(
        live_api: LiveApi, api_sessions: sessionmaker[Session], client: Client) -> None:
    """No platform limit (the shared API), but the tenant's budget says 1 run at a time (set by its
    admin through the API): its second submission is refused; another tenant's is not."""
    tenant, tokens = make_tenant(api_sessions)
    other, other_tokens = make_tenant(api_sessions)
    repo = workspace(live_api, f"ws-{tenant}")
    started = []
    async with live_api.client(tokens[Role.ADMIN]) as admin, live_api.client(tokens[Role.OPERATOR]) as http, \
            live_api.client(other_tokens[Role.OPERATOR]) as other_http:
        set_to = await admin.put(f"/api/meta/v4/tenants/{tenant}/budget", json={"concurrent_runs": 1})
        assert set_to.status_code == 200 and set_to.json()["concurrent_runs"] == 1, set_to.text
        blocker = "name: held\nsteps:\n  - name: a\n    command: sleep 60\n"
        try:
            first = await http.post("/api/meta/v3/runs", json={"plan_yaml": blocker, "workspace": str(repo)})
            assert first.status_code == 202, first.text
            started.append(first.json()["run_id"])
            for _ in range(50):  # counted by Temporal's visibility, which follows the start within moments
                refused = await _submit(http, repo)
                if refused.status_code == 409:
                    break
                started.append(refused.json()["run_id"])
                await asyncio.sleep(0.2)
            assert refused.status_code == 409, refused.text
            assert "the tenant budget's concurrent_runs" in refused.json()["detail"]
            theirs = await _submit(other_http, workspace(live_api, f"ws-{other}"))
            assert theirs.status_code == 202, theirs.text
            started.append(theirs.json()["run_id"])
        finally:
            for run_id in started:
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(workflow_id(run_id)).terminate("test: done")
