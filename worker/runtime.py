"""Connecting to Temporal and building the workers of a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import start_http_server
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from metabuilder.activities.breakers import Breakers
from metabuilder.activities.records import RecordActivities
from metabuilder.activities.repair import RepairActivities
from metabuilder.activities.steps import StepActivities
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.domain.plans import Queue
from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue
from metabuilder.migrations import upgrade
from metabuilder.service.errors import Unavailable
from metabuilder.store.db import make_engine, session_factory
from metabuilder.telemetry import tracing
from metabuilder.worker.devserver import DevServer, DevServerError, ensure_search_attributes, port_open
from metabuilder.worker.settings import Settings, SettingsError
from metabuilder.workflows import search_attributes
from metabuilder.workflows.build_run import BuildRunWorkflow
from metabuilder.workflows.repair import RepairWorkflow

log = structlog.get_logger("metabuilder.worker")

POOLS = (WORKFLOW_QUEUE, *(q.value for q in Queue))


def parse_pools(text: str) -> list[str]:
    """``"cpu,io"`` -> ``["cpu", "io"]``; ``ValueError`` naming an unknown pool."""
    pools = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise ValueError(f"unknown queue {', '.join(unknown) or '(none)'}: expected some of {', '.join(POOLS)}")
    return list(dict.fromkeys(pools))


async def connect(settings: Settings, *, start_embedded: bool = True, runtime: Runtime | None = None) -> Client:
    """A client of the configured server. With no ``TEMPORAL_ADDRESS`` and nothing listening on
    the embedded port, start the embedded dev server in the background (it outlives this process).
    ``runtime`` (:func:`sdk_metrics_runtime`) carries the SDK's metrics endpoint to the workers.

    An external server is reached through the SDK's environment configuration (``TEMPORAL_*``
    variables, or a profile of ``TEMPORAL_CONFIG_FILE``): namespace, TLS or mTLS, API key. Its
    search attributes are registered once by an admin (``metabuilder temporal setup``), never on
    connect: Temporal Cloud refuses that to an ordinary client."""
    if settings.embedded:
        if not port_open("127.0.0.1", settings.dev_server_port):
            if not start_embedded:
                raise DevServerError(f"no Temporal server on {settings.address} (start one with `metabuilder up`)")
            server = DevServer(settings.home / "temporal", settings.dev_server_port, settings.dev_server_ui_port)
            log.info("devserver.starting", address=server.address, ui=settings.ui_url, data=str(server.db_file))
            server.start(detach=True)
            await server.wait_ready()
        options: dict[str, Any] = {"target_host": settings.address, "namespace": settings.temporal_namespace}
    else:
        options = temporal_connect_options(settings)
    try:
        client = await Client.connect(**options, runtime=runtime, interceptors=tracing.interceptors(settings.tracing))
    except RuntimeError as err:
        raise DevServerError(f"cannot connect to Temporal at {options['target_host']}: {err}") from err
    if settings.embedded:
        await ensure_search_attributes(client, settings.temporal_namespace)
    return client


def temporal_connect_options(settings: Settings) -> dict[str, Any]:
    """``Client.connect`` options of an external server from the SDK's environment configuration;
    ``SettingsError`` naming what is wrong."""
    from temporalio.envconfig import ClientConfigProfile  # imports the SDK's service layer: only when connecting

    env = settings.temporal_env
    try:
        profile = ClientConfigProfile.load(env.get("TEMPORAL_PROFILE") or None, override_env_vars=env)
    except Exception as err:  # the SDK raises RuntimeError/ValueError/OSError for a bad file or profile
        where = env.get("TEMPORAL_CONFIG_FILE") or "the Temporal client configuration"
        raise SettingsError(f"{where}: {err}") from None
    options: dict[str, Any] = dict(profile.to_client_connect_config())
    if settings.temporal_address:
        options["target_host"] = settings.temporal_address
    if not options.get("target_host"):
        raise SettingsError("TEMPORAL_PROFILE/TEMPORAL_CONFIG_FILE: the profile names no address "
                            "(set `address` in the profile or TEMPORAL_ADDRESS)")
    options.setdefault("namespace", settings.temporal_namespace)
    return options


async def register_search_attributes(settings: Settings) -> tuple[str, list[str]]:
    """Register Meta-Builder's search attributes in the configured namespace (an admin's one-off
    step on an external server); returns the namespace and the attributes' names."""
    client = await connect(settings, start_embedded=False)
    await ensure_search_attributes(client, client.namespace)
    return client.namespace, [key.name for key in search_attributes.ALL]


def sdk_metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime whose own metrics are served for Prometheus on ``sdk_metrics_port``
    (None when it is 0). Raises ``MetricsPortError`` when the port is taken."""
    if not settings.sdk_metrics_port:
        return None
    address = f"{settings.metrics_host}:{settings.sdk_metrics_port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
    except Exception as err:  # the core raises a plain exception naming the bind error
        raise MetricsPortError(f"cannot serve the Temporal SDK's metrics on {address} "
                               f"(META_BUILDER_SDK_METRICS_PORT; 0 turns it off): {err}") from err


def serve_metrics(settings: Settings) -> str | None:
    """Serve this process's ``/metrics`` (``telemetry.metrics``) on ``metrics_port`` from a
    background thread; return its URL (None when the port is 0)."""
    if not settings.metrics_port:
        return None
    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    except OSError as err:
        raise MetricsPortError(f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port} "
                               f"(META_BUILDER_METRICS_PORT; 0 turns it off): {err.strerror or err}") from err
    return f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"


class MetricsPortError(OSError):
    """A metrics endpoint could not listen where the settings say."""


def prepare_database(settings: Settings) -> sessionmaker[Session]:
    """Migrate the DB to head (the embedded SQLite default is created on first use);
    ``Unavailable`` when the database cannot be reached."""
    try:
        upgrade(settings.database_url)
    except OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig is not None else str(err)
        raise Unavailable(f"cannot reach the database {make_url(settings.database_url).render_as_string()}: "
                          f"{reason}") from None
    return session_factory(make_engine(settings.database_url))


def build_workers(client: Client, settings: Settings, sessions: sessionmaker[Session],
                  pools: Sequence[str], *, concurrency: int = 4,
                  prefix: str | None = None) -> list[Worker]:
    """One Temporal worker per pool: ``workflow`` runs BuildRunWorkflow and RepairWorkflow (and
    their local bookkeeping activities); ``cpu``/``io``/``llm`` run steps and repair activities,
    ``concurrency`` at a time."""
    prefix = prefix or settings.task_queue_prefix
    workspace = Workspace(Path(settings.artifacts_dir), WorkspaceCache(Path(settings.cache_dir)))
    steps = StepActivities(workspace, sessions, llm_classifier=settings.llm if settings.llm_classify else None,
                           breakers=Breakers(sessions, settings.breakers) if settings.breakers.enabled else None)
    records = RecordActivities(sessions)
    repair = RepairActivities(workspace, sessions, settings.llm)
    runner = SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "metabuilder.domain", "yaml", *tracing.PASSTHROUGH_MODULES))
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
