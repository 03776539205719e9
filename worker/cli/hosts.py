"""``metabuilder workers``, ``leases`` and ``logs``: the deployment's workers and what they hold,
and step logs from the database, whichever host ran the step (``--follow``: live)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from metabuilder.worker.cli.exits import EXIT_OK
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


def _ago(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "-"
    seconds = int((now - at).total_seconds())
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago" if seconds < 7200 else \
        f"{seconds // 3600}h ago"


async def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import workers as service
    from metabuilder.worker.devserver import DevServerError
    from metabuilder.worker.runtime import connect, prepare_database

    sessions = prepare_database(settings)
    try:
        client = await connect(settings, start_embedded=False)
    except DevServerError as err:
        print(f"metabuilder: Temporal's pollers are not shown: {err}", file=sys.stderr)
        client = None
    views, leases = await service.list_workers(sessions, client, settings.task_queue_prefix)
    if args.json:
        print_json({"workers": [asdict(v) for v in views], "leases": [asdict(lease) for lease in leases],
                    "temporal": client is not None})
        return EXIT_OK
    now = datetime.now(UTC)
    if not views:
        print(f"no workers of {settings.task_queue_prefix}-* have reported or poll")
    for v in views:
        slots = ",".join(f"{p}={n}" for p, n in v.pools.items()) or "?"
        print(f"{v.identity:<28} {v.state:<12} host {v.host}  pools {slots}  version {v.version or '?'}  "
              f"started {_ago(v.started_at, now)}  last poll {_ago(v.last_poll_at, now)}  "
              f"polling {','.join(v.polling) or '-'}  holds {v.leases}")
    _print_leases(leases, now)
    return EXIT_OK


def _print_leases(leases: list, now: datetime) -> None:  # type: ignore[type-arg]
    if not leases:
        return
    print("leases:")
    for lease in leases:
        print(f"  {lease.run_id} step {lease.step_index} {lease.step_name} attempt {lease.attempt} "
              f"({lease.queue}): {lease.status}, {lease.worker} since {_ago(lease.acquired_at, now)}, "
              f"heartbeat {_ago(lease.last_heartbeat_at, now)}, expires {lease.expires_at.isoformat()}")


async def cmd_leases(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import workers as service
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        leases = service.list_leases(session, run_id=args.run)
    if args.json:
        print_json([asdict(lease) for lease in leases])
    elif not leases:
        print("no step attempt is held")
    else:
        _print_leases(leases, datetime.now(UTC))
    return EXIT_OK


async def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import step_logs
    from metabuilder.service.errors import NotFound
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.exits import CliError
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    try:
        with transaction(sessions) as session:
            key = step_logs.resolve_attempt(session, args.run_id, args.step, args.attempt, tenant=None)
            piece = None if args.follow else step_logs.read_piece(session, key)
    except NotFound as err:
        raise CliError(str(err)) from None
    if piece is not None:
        sys.stdout.write(piece.text)
        if not piece.done:
            print(f"[metabuilder] attempt {key.attempt} is still running or its worker was lost; "
                  "--follow to read on", file=sys.stderr)
        return EXIT_OK
    async for part in step_logs.follow(sessions, key):
        sys.stdout.write(part.text)
        sys.stdout.flush()
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("workers", help="the deployment's workers: host, pools and slots, version, last poll, leases")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_workers)
    p = sub.add_parser("leases", help="which worker holds which step attempt")
    p.add_argument("--run", help="only this run's")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_leases)
    p = sub.add_parser("logs", help="a step's log from the database, whichever host ran it")
    p.add_argument("run_id")
    p.add_argument("step", nargs="?", help="a step name or index (default: the run's latest step)")
    p.add_argument("--attempt", type=int, help="an attempt number (default: the latest)")
    p.add_argument("--follow", "-f", action="store_true", help="follow it live until it ends")
    p.set_defaults(fn=cmd_logs)
