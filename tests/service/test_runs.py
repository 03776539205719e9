"""Reading a run back and cancelling one: the use cases behind `metabuilder status|cancel` and
``GET /runs/{id}``, ``POST /runs/{id}/cancel``; on a real projection and a real Temporal server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client

from metabuilder.domain.runs import RunStatus
from metabuilder.service.errors import Conflict, NotFound
from metabuilder.service.runs import SubmitOptions, cancel, run_detail, submit
from metabuilder.store.db import transaction
from metabuilder.worker.settings import Settings
from tests.service.conftest import PLAN


def test_run_detail_has_the_attempts_and_gates(seeded: sessionmaker[Session]) -> None:
    with transaction(seeded) as session:
        detail = run_detail(session, "acme-1", "acme")
        assert (detail.run.id, detail.run.status) == ("acme-1", "running")
        assert [(s.name, s.attempt, s.status) for s in detail.steps] == [("build", 1, "running")]
        assert [g.id for g in detail.gates] == ["acme-1-gate-1"]
        assert run_detail(session, "acme-1", None).run.id == "acme-1"
        with pytest.raises(NotFound, match="^unknown run id 'acme-1'$"):
            run_detail(session, "acme-1", "globex")


def test_submit_options_of_a_deployment(settings: Settings) -> None:
    opts = SubmitOptions.of(settings, tenant="acme")
    assert (opts.shared_repo, opts.task_queue_prefix, opts.heartbeat_timeout_seconds, opts.tenant) == (
        settings.shared_repo, settings.task_queue_prefix, settings.heartbeat_timeout_seconds, "acme")
    assert (opts.autofix, opts.search_attributes) == (None, True)
    other = SubmitOptions.of(settings, heartbeat_timeout_seconds=3, search_attributes=False)
    assert (other.heartbeat_timeout_seconds, other.search_attributes) == (3, False)


@pytest.mark.parametrize(("run_id", "tenant", "error", "message"), [
    ("acme-done", "acme", Conflict, "run acme-done has finished (succeeded); there is nothing to cancel"),
    ("acme-done", None, Conflict, "run acme-done has finished (succeeded); there is nothing to cancel"),
    ("acme-1", "globex", NotFound, "unknown run id 'acme-1'"),
    ("no-such", "acme", NotFound, "unknown run id 'no-such'"),
    ("no-such", None, NotFound, "unknown run id 'no-such' (no workflow build-run-no-such)"),
    ("acme-1", "acme", Conflict, "run acme-1 has no running workflow"),  # recorded, but no workflow by that id
])
async def test_cancel_refuses(seeded: sessionmaker[Session], client: Client, run_id: str, tenant: str | None,
                              error: type[Exception], message: str) -> None:
    connected = []

    async def connect() -> Client:
        connected.append(True)
        return client

    with pytest.raises(error) as raised:
        await cancel(connect, seeded, run_id, tenant=tenant)
    assert str(raised.value) == message
    # Refused from the projection alone, Temporal is not even asked (it may be down).
    assert connected == ([True] if "workflow" in message else [])


async def test_cancel_a_run_no_worker_has_recorded_yet(sessions: sessionmaker[Session], client: Client,
                                                       settings: Settings, user_repo: Path) -> None:
    submitted = await submit(client, PLAN, "plan.yaml", user_repo, SubmitOptions.of(settings))  # no worker polls
    try:
        with pytest.raises(NotFound):  # a tenant's caller sees only what the projection shows
            await cancel(lambda: _same(client), sessions, submitted.run_id, tenant="default")
        asked = await cancel(lambda: _same(client), sessions, submitted.run_id, tenant=None)
        assert (asked.run_id, asked.status, asked.iteration) == (submitted.run_id, RunStatus.PENDING, 1)
        history = [e.WhichOneof("attributes") async for e in submitted.handle.fetch_history_events()]
        assert "workflow_execution_cancel_requested_event_attributes" in history
    finally:
        await submitted.handle.terminate("test over")


async def _same(client: Client) -> Client:
    return client
