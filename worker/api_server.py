"""Serve the API with uvicorn inside this process's event loop (alone, or beside `up`'s workers)."""

from __future__ import annotations

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.config import ApiConfig
from worker.runtime import connect
from worker.settings import Settings


def api_config(settings: Settings, sessions: sessionmaker[Session]) -> ApiConfig:
    return ApiConfig(
        sessions=sessions, connect=lambda: connect(settings, start_embedded=False), platform=settings.autofix,
        shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds, namespace=settings.temporal_namespace,
        workspace_roots=list(settings.workspace_roots), ui_url=settings.ui_url)


def api_server(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(create_app(api_config(settings, sessions)), host=host, port=port,
                            log_level="warning", lifespan="off")
    return uvicorn.Server(config)


async def serve_api(settings: Settings, sessions: sessionmaker[Session], host: str, port: int) -> None:
    print(f"API on http://{host}:{port} (docs http://{host}:{port}/docs); Ctrl-C stops it")
    await api_server(settings, sessions, host, port).serve()
