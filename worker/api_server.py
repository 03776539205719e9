"""Serve the API with uvicorn inside this process's event loop (alone, or beside `up`'s workers)."""

from __future__ import annotations

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.api.app import create_app
from metabuilder.api.config import ApiConfig
from metabuilder.worker.runtime import connect
from metabuilder.worker.settings import Settings


def api_config(settings: Settings, sessions: sessionmaker[Session]) -> ApiConfig:
    return ApiConfig(
        sessions=sessions, connect=lambda: connect(settings, start_embedded=False), platform=settings.autofix,
        shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds, namespace=settings.temporal_namespace,
        workspace_roots=list(settings.workspace_roots), ui_url=settings.ui_url)


SHUTDOWN_GRACE_SECONDS = 5
"""After SIGTERM, requests in progress get this long to finish; then the server stops. Without a
bound, uvicorn waited for every queued request, for minutes after an overload."""


def api_server(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(create_app(api_config(settings, sessions)), host=host, port=port,
                            log_level="warning", lifespan="off", timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
    return uvicorn.Server(config)


async def serve_api(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> None:
    print(f"API on http://{host}:{port} (docs http://{host}:{port}/docs); Ctrl-C stops it")
    await api_server(settings, sessions, host, port).serve()
