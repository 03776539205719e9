"""structlog, configured once per process: console in development, JSON elsewhere.

Records of the standard library (Temporal SDK, SQLAlchemy, alembic) go through the same
renderer, so a process writes one format only.
"""

from __future__ import annotations

import logging
import sys

import structlog

from metabuilder.worker.settings import Settings
from metabuilder.worker.terminal import use_color

_configured = False


def configure_logging(settings: Settings, *, quiet_sdk: bool = False) -> None:
    """``quiet_sdk`` keeps the SDK's worker lifecycle messages out of interactive commands."""
    global _configured
    if _configured:
        return
    _configured = True
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(colors=use_color(sys.stderr))
        if settings.log_format == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        # A stdlib record's ``extra`` (the SDK's ``temporal_workflow``/``temporal_activity``
        # context) becomes fields of the event.
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Alembic logs every migration step at INFO; keep start-up quiet unless asked.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    if quiet_sdk:
        logging.getLogger("temporalio").setLevel(max(logging.WARNING, root.level))
