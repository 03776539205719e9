"""``metabuilder doctor``: is this deployment healthy? The checks of ``service.diagnostics``
(also the portal's diagnostics page), each green or red with a reason."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from metabuilder.worker.cli.exits import EXIT_OK, EXIT_RUN_FAILED
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.service.diagnostics import Deployment
    from metabuilder.worker.settings import Settings

def deployment(settings: Settings) -> Deployment:
    """What the checks look at, from this process's settings."""
    from metabuilder.service.diagnostics import Deployment
    from metabuilder.worker.cli.version import version_string
    from metabuilder.worker.runtime import connect, prepare_database

    return Deployment(connect=lambda: connect(settings, start_embedded=False), address=settings.address,
                      database_url=settings.database_url, sessions=lambda: prepare_database(settings),
                      task_queue_prefix=settings.task_queue_prefix, privacy=settings.privacy, llm=settings.llm,
                      version=version_string(), revisions=lambda: revisions(settings.database_url),
                      canary_deployment=settings.deployment.name if settings.deployment.versioning else None,
                      canary=settings.v4.canary)


def revisions(database_url: str) -> tuple[str | None, str]:
    """The database's migration revision, and the head of the migrations this package ships."""
    from alembic.script import ScriptDirectory

    from metabuilder.migrations import alembic_config, current_revision

    current = current_revision(database_url)
    return current, str(ScriptDirectory.from_config(alembic_config(database_url)).get_current_head())


async def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service.diagnostics import run_checks

    checks = await run_checks(deployment(settings), args.tenant)
    if args.json:
        out: list[dict[str, Any]] = [asdict(c) for c in checks]
        print_json(out)
    else:
        for c in checks:
            print(f"{'green' if c.ok else 'RED  '}  {c.name:<28} {c.reason}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_RUN_FAILED


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check versions, Temporal, workers, the database, the LLM endpoint, breakers")
    p.add_argument("--tenant", default="default", help="whose privacy mode and breakers to check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_doctor)
