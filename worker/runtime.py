"""Connecting to Temporal and building the workers of a process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import start_http_server
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from metabuilder.activities.approvers import ApproverActivities
from metabuilder.activities.breakers import Breakers
from metabuilder.activities.budgets import BudgetActivities, Metering
from metabuilder.activities.chaos import Chaos
from metabuilder.activities.notifications import Notifier, WebhookActivities
from metabuilder.activities.records import RecordActivities
from metabuilder.activities.replay import RecordingRepairActivities, RecordingStepActivities
from metabuilder.activities.step_watch import StepWatcher
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.domain.canary import build_id_of
from metabuilder.domain.plans import Queue
from metabuilder.domain.pools import share_slots
from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue
from metabuilder.migrations import upgrade
from metabuilder.service.errors import Unavailable
from metabuilder.store.db import make_engine, session_factory
from metabuilder.telemetry import tracing
from metabuilder.worker.devserver import DevServer, DevServerError, ensure_search_attributes, port_open
from metabuilder.worker.settings import Settings, SettingsError
from metabuilder.workflows import search_attributes
from metabuilder.workflows.build_run import BuildRunWorkflow
from metabuilder.workflows.notify import GateExpiryWatchWorkflow, WebhookDeliveryWorkflow
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
        server = DevServer.of_home(settings)
        if not port_open("127.0.0.1", settings.dev_server_port):
            if not start_embedded:
                raise DevServerError(f"no Temporal server on {settings.address} (start one with `metabuilder up`)")
            log.info("devserver.starting", address=server.address, ui=settings.ui_url, data=str(server.db_file))
            server.start(detach=True)
            await server.wait_ready()
        elif start_embedded and not server.recorded_here():
            log.warning("devserver.not_this_homes", address=server.address, home=str(settings.home),
                        detail="a Temporal server this home did not start listens on the embedded port: its "
                               "runs and workers are shared with whoever started it (set TEMPORAL_ADDRESS, or "
                               "META_BUILDER_DEV_SERVER_PORT for a server of this home's own)")
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


def deployment_version(settings: Settings) -> WorkerDeploymentVersion | None:
    """The Worker Deployment version of this process's workers (None: unversioned). The build id
    is ``META_BUILDER_BUILD_ID``, else the package version and the source commit."""
    d = settings.deployment
    if not d.versioning:
        return None
    if d.build_id:
        return WorkerDeploymentVersion(d.name, d.build_id)
    from metabuilder.worker.cli.version import package_version, source_commit

    return WorkerDeploymentVersion(d.name, build_id_of(package_version(), source_commit()))


async def adopt_version(client: Client, settings: Settings) -> None:
    """A versioned worker's start (``worker``, ``up``): when its deployment has no current version
    yet, make this one current (a first deployment); a later build waits for `metabuilder canary ramp`."""
    version = deployment_version(settings)
    if version is None:
        return
    from metabuilder.service.canary import adopt_if_first

    try:
        adopted = await adopt_if_first(client, version.deployment_name, version.build_id, client.identity)
    except Unavailable as err:
        log.warning("deployment.not_adopted", version=version.to_canonical_string(), reason=str(err))
        return
    log.info("deployment.version", version=version.to_canonical_string(),
             current="this version (first of the deployment)" if adopted else "unchanged")


def _deployment_config(version: WorkerDeploymentVersion | None) -> WorkerDeploymentConfig | None:
    """Versioned workers: every workflow is PINNED to the version it started on (a run waiting
    days at a gate keeps its code); the activities and repair children it schedules go to the same
    version's workers, which poll the same task queues."""
    if version is None:
        return None
    return WorkerDeploymentConfig(version=version, use_worker_versioning=True,
                                  default_versioning_behavior=VersioningBehavior.PINNED)


def build_workers(client: Client, settings: Settings, sessions: sessionmaker[Session],
                  pools: Sequence[str], *, concurrency: int = 4,
                  prefix: str | None = None, slots: Mapping[str, int] | None = None,
                  versioned: bool = False) -> list[Worker]:
    """One Temporal worker per pool: ``workflow`` runs BuildRunWorkflow and RepairWorkflow (and
    their local bookkeeping activities); ``cpu``/``io``/``llm`` run steps and repair activities,
    ``slots[pool]`` (else ``concurrency``) at a time each, within the process's ``META_V4_MAX_WORKERS``
    (:func:`step_slots`). ``versioned`` (the ``worker`` and ``up`` processes): poll as the Worker
    Deployment version of :func:`deployment_version` when the settings turn versioning on; the
    in-process workers of ``run``, ``demo``, ``eval`` and the tests stay unversioned."""
    prefix = prefix or settings.task_queue_prefix
    requested = dict(slots or {})
    slots = {**requested, **step_slots(settings, pools, concurrency, requested)}
    watcher = StepWatcher(sessions, client.identity, settings.step_logs) if settings.step_logs.enabled else None
    workspace = Workspace(Path(settings.artifacts_dir), WorkspaceCache(Path(settings.cache_dir)), watcher=watcher)
    workflow_queue = task_queue(prefix, WORKFLOW_QUEUE)
    notifier = Notifier(client, sessions, workflow_queue, settings.webhooks)
    steps = RecordingStepActivities(
        workspace, sessions, llm_classifier=settings.llm if settings.llm_classify else None,
        breakers=Breakers(sessions, settings.breakers) if settings.breakers.enabled else None,
        chaos=Chaos(sessions, settings.chaos) if settings.chaos.enabled else None, privacy=settings.privacy,
        metering=Metering(sessions, settings.budgets), notifier=notifier)
    version = deployment_version(settings) if versioned else None
    deployment = _deployment_config(version)
    records = RecordActivities(sessions, (version.deployment_name, version.build_id) if version else None, notifier)
    budgets = BudgetActivities(sessions, settings.budgets, settings.llm, notifier)
    webhooks = WebhookActivities(sessions, settings.privacy, notifier)
    approvers = ApproverActivities(sessions)
    repair = RecordingRepairActivities(workspace, sessions, settings.llm, privacy=settings.privacy,
                                       catalogue=settings.model_catalogue,
                                       metering=Metering(sessions, settings.budgets),
                                       drill_fail_patch=settings.deployment.drill_fail_patch)
    runner = workflow_runner()
    workers = []
    for pool in pools:
        if pool == WORKFLOW_QUEUE:
            workers.append(Worker(
                client, task_queue=workflow_queue, workflows=[BuildRunWorkflow, RepairWorkflow,
                                                                WebhookDeliveryWorkflow, GateExpiryWatchWorkflow],
                activities=[records.record_run, records.record_autofix, records.record_gate,
                            approvers.approver_role, records.record_sla, budgets.reserve_budget,
                            webhooks.deliver_webhook, webhooks.warn_gate_expiring],
                workflow_runner=runner,
                sticky_queue_schedule_to_start_timeout=timedelta(seconds=settings.sticky_timeout_seconds),
                max_concurrent_workflow_tasks=slots.get(pool),  # None: the SDK's default
                deployment_config=deployment,
            ))
        else:
            workers.append(Worker(
                client, task_queue=task_queue(prefix, pool),
                activities=[steps.run_step, repair.propose_fix, repair.propose_llm_patch, repair.apply_patch,
                            repair.rollback, repair.verify_candidate],
                max_concurrent_activities=slots[pool],
                graceful_shutdown_timeout=timedelta(seconds=settings.worker_grace_seconds),
                deployment_config=deployment,
            ))
    return workers


def workflow_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox of every worker (and of the replayer: the same code, the same rules)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "metabuilder.domain", "yaml", *tracing.PASSTHROUGH_MODULES))


def step_slots(settings: Settings, pools: Sequence[str], concurrency: int,
               requested: Mapping[str, int] | None = None) -> dict[str, int]:
    """Activity slots of each step pool: what ``--queues`` asks for it (``requested``), else
    ``concurrency``, or ``META_V4_MAX_WORKERS`` shared out when their sum is more
    (``SettingsError`` when the cap is smaller than the number of step pools)."""
    asked = requested or {}
    try:
        return share_slots({p: asked.get(p, concurrency) for p in pools if p != WORKFLOW_QUEUE},
                           settings.v4.max_workers)
    except ValueError as err:
        raise SettingsError(f"META_V4_MAX_WORKERS={settings.v4.max_workers}: {err}") from None


def use_pidfd_child_watcher() -> Any:
    """On Python 3.11 asyncio watches each subprocess with a thread of its own; a step spawns
    two (its command and ``git status``). Linux pidfds do it without threads (3.12 does this itself).
    Returns the watcher it replaced (None when it replaced none), to be put back with
    :func:`restore_child_watcher`: a pidfd watcher serves only the loop it was attached to."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            previous = asyncio.get_child_watcher()
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
            return previous
    return None


def restore_child_watcher(previous: Any) -> None:
    if previous is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(previous)


@contextlib.asynccontextmanager
async def running_workers(workers: Sequence[Worker]) -> AsyncIterator[None]:
    """Run workers in this process for the duration of the block."""
    previous = use_pidfd_child_watcher()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        restore_child_watcher(previous)
