"""Serve the API with uvicorn: inside this process's event loop (alone, or beside `up`'s workers),
or as several processes sharing one port; and ``create_app``, the factory that ``uvicorn
--factory`` and gunicorn's uvicorn worker import.

uvicorn's own logging is off (``log_config=None``): its loggers (``uvicorn.error`` with the
tracebacks of failed requests, ``uvicorn.access``) propagate to the root logger that
``configure_logging`` set up, so that the API process writes one format, JSON outside
development, like the workers.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.api.app import create_app as build_app
from metabuilder.api.config import ApiConfig
from metabuilder.service.diagnostics import Deployment
from metabuilder.worker.runtime import connect
from metabuilder.worker.settings import Settings

FACTORY = "metabuilder.worker.api_server:create_app"
"""For ``uvicorn --factory`` (and ``metabuilder api --workers N``, which runs it in each process)."""


def api_config(settings: Settings, sessions: sessionmaker[Session]) -> ApiConfig:
    return ApiConfig(
        sessions=sessions, connect=lambda: connect(settings, start_embedded=False), platform=settings.autofix,
        shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds, namespace=settings.temporal_namespace,
        workspace_roots=list(settings.workspace_roots), ui_url=settings.ui_url,
        breaker_policies=settings.breakers.policies, breaker_alert_after_seconds=settings.breaker_alert_after_seconds,
        v4=settings.v4, chaos=settings.chaos, deployment_name=settings.deployment.name,
        tenant_max_active_runs=settings.tenant_max_active_runs,
        privacy=settings.privacy, budgets=settings.budgets, diagnostics=diagnostics(settings, sessions))


def diagnostics(settings: Settings, sessions: sessionmaker[Session]) -> Deployment:
    """The doctor's view of this deployment, for the portal's diagnostics page."""
    from metabuilder.worker.cli.doctor import revisions
    from metabuilder.worker.cli.version import version_string

    return Deployment(connect=lambda: connect(settings, start_embedded=False), address=settings.address,
                      database_url=settings.database_url, sessions=lambda: sessions,
                      task_queue_prefix=settings.task_queue_prefix, privacy=settings.privacy, llm=settings.llm,
                      version=version_string(), revisions=lambda: revisions(settings.database_url),
                      canary_deployment=settings.deployment.name if settings.deployment.versioning else None,
                      canary=settings.v4.canary)


def create_app() -> FastAPI:
    """The API from the environment's settings (``META_BUILDER_*``, ``DATABASE_URL``, ``TEMPORAL_*``),
    with the database migrated to head and logging configured, uvicorn's loggers included (whatever
    uvicorn's command line set up for them is undone: they go through structlog, and its access
    lines follow ``META_BUILDER_API_ACCESS_LOG``)."""
    from metabuilder.worker.logging import configure_logging, route_uvicorn_logs
    from metabuilder.worker.runtime import prepare_database
    from metabuilder.worker.settings import SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as err:
        raise SystemExit(f"metabuilder: bad setting: {err}") from None
    configure_logging(settings)
    route_uvicorn_logs(access=settings.api_access_log)
    return settled(build_app(api_config(settings, prepare_database(settings))))


def settled(app: FastAPI) -> FastAPI:
    """``app``, with everything the process has made so far (its modules, the app's routes and
    models) moved out of the garbage collector's sight (``gc.freeze``). Those objects live as
    long as the process; left in, each full collection walked them all, about 150 ms with the
    event loop stopped, which was the API's worst latency under load (bench/RESULTS.md)."""
    gc.collect()
    gc.freeze()
    return app


SHUTDOWN_GRACE_SECONDS = 5
"""After SIGTERM, requests in progress get this long to finish; then the server stops. Without a
bound, uvicorn waited for every queued request, for minutes after an overload."""


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (as uvicorn picks it for ``--workers N``), else
    asyncio's own: the API process alone, which runs no workflow code."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def _options(settings: Settings) -> dict[str, object]:
    return {"log_config": None, "log_level": None, "access_log": settings.api_access_log, "lifespan": "off",
            "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS}


def api_server(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(settled(build_app(api_config(settings, sessions))), host=host, port=port,
                            **_options(settings))  # type: ignore[arg-type]
    return uvicorn.Server(config)


async def serve_api(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> None:
    print(f"API on http://{host}:{port} (docs http://{host}:{port}/docs); Ctrl-C stops it", flush=True)
    await api_server(settings, sessions, host, port).serve()


def serve_api_processes(settings: Settings, host: str, port: int, workers: int) -> None:
    """``workers`` processes, each with its own ``create_app()``, accepting on one socket; SIGTERM
    to this one stops them all, each within the grace period. The database is migrated before."""
    print(f"API on http://{host}:{port} (docs http://{host}:{port}/docs), {workers} processes; Ctrl-C stops it",
          flush=True)
    uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers, **_options(settings))  # type: ignore[arg-type]
