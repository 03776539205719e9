"""Connecting to Temporal and building the workers of a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.git import WorkspaceCache
from activities.records import RecordActivities
from activities.repair import RepairActivities
from activities.steps import StepActivities, StepSettings
from domain.plans import Queue
from domain.runs import WORKFLOW_QUEUE, task_queue
from migrations import upgrade
from store.db import make_engine, session_factory
from worker.devserver import DevServer, DevServerError, ensure_search_attributes, port_open
from worker.settings import Settings
from workflows.build_run import BuildRunWorkflow
from workflows.repair import RepairWorkflow

log = structlog.get_logger("metabuilder.worker")

POOLS = (WORKFLOW_QUEUE, *(q.value for q in Queue))


def parse_pools(text: str) -> list[str]:
    """``"cpu,io"`` -> ``["cpu", "io"]``; ``ValueError`` naming an unknown pool."""
    pools = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise ValueError(f"unknown queue {', '.join(unknown) or '(none)'}: expected some of {', '.join(POOLS)}")
    return list(dict.fromkeys(pools))


async def connect(settings: Settings, *, start_embedded: bool = True) -> Client:
    """A client of the configured server. With no ``TEMPORAL_ADDRESS`` and nothing listening on
    the embedded port, start the embedded dev server in the background (it outlives this process)."""
    if settings.embedded and not port_open("127.0.0.1", settings.dev_server_port):
        if not start_embedded:
            raise DevServerError(f"no Temporal server on {settings.address} (start one with `metabuilder up`)")
        server = DevServer(settings.home / "temporal", settings.dev_server_port, settings.dev_server_ui_port)
        log.info("devserver.starting", address=server.address, ui=settings.ui_url, data=str(server.db_file))
        server.start(detach=True)
        await server.wait_ready()
    try:
        client = await Client.connect(settings.address, namespace=settings.temporal_namespace)
    except RuntimeError as err:
        raise DevServerError(f"cannot connect to Temporal at {settings.address}: {err}") from err
    await ensure_search_attributes(client, settings.temporal_namespace)
    return client


def prepare_database(settings: Settings) -> sessionmaker[Session]:
    """Migrate the DB to head (the embedded SQLite default is created on first use)."""
    upgrade(settings.database_url)
    return session_factory(make_engine(settings.database_url))


def build_workers(client: Client, settings: Settings, sessions: sessionmaker[Session],
                  pools: Sequence[str], *, concurrency: int = 4,
                  prefix: str | None = None) -> list[Worker]:
    """One Temporal worker per pool: ``workflow`` runs BuildRunWorkflow and RepairWorkflow (and
    their local bookkeeping activities); ``cpu``/``io``/``llm`` run steps and repair activities,
    ``concurrency`` at a time."""
    prefix = prefix or settings.task_queue_prefix
    workspaces = WorkspaceCache(Path(settings.cache_dir))
    steps = StepActivities(StepSettings(artifacts_dir=Path(settings.artifacts_dir)), workspaces, sessions)
    records = RecordActivities(sessions)
    repair = RepairActivities(steps, settings.llm)
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules("domain", "yaml"))
    workers = []
    for pool in pools:
        if pool == WORKFLOW_QUEUE:
            workers.append(Worker(
                client, task_queue=task_queue(prefix, pool), workflows=[BuildRunWorkflow, RepairWorkflow],
                activities=[records.record_run, records.record_autofix, records.record_gate], workflow_runner=runner,
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_timeout_seconds),
            ))
        else:
            workers.append(Worker(
                client, task_queue=task_queue(prefix, pool),
                activities=[steps.run_step, repair.propose_fix, repair.propose_llm_patch, repair.apply_patch,
                            repair.rollback],
                max_concurrent_activities=concurrency,
            ))
    return workers


def use_pidfd_child_watcher() -> None:
    """On Python 3.11 asyncio watches each subprocess with a thread of its own; a step spawns
    two (its command and ``git status``). Linux pidfds do it without threads (3.12 does this itself)."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)


@contextlib.asynccontextmanager
async def running_workers(workers: Sequence[Worker]) -> AsyncIterator[None]:
    """Run workers in this process for the duration of the block."""
    use_pidfd_child_watcher()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
