"""``metabuilder audit export``: the audit log as JSON lines, by tenant and time range; and who
the CLI's changes are audited as."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


def cli_actor(user: str | None = None) -> str:
    """``cli:<user>`` (default: the login name), the actor of the CLI's audit events; the first
    call also names this invocation, the request id of every event it writes (``cli-<hex>``)."""
    from metabuilder.store.audit import REQUEST_ID

    if REQUEST_ID.get() is None:
        REQUEST_ID.set(f"cli-{uuid.uuid4().hex}")
    return f"cli:{user or getpass.getuser()}"


def parse_time(raw: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (a date alone is its midnight; no offset means UTC); ``ValueError`` naming the option."""
    if raw is None or not raw.strip():
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {raw!r}: expected an ISO 8601 time, e.g. 2026-12-02T18:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.store.audit import export_events
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    since, until = parse_time(args.since, "--since"), parse_time(args.until, "--until")
    if since and until and since >= until:
        raise ValueError(f"--since {args.since} is not before --until {args.until}")
    sessions = prepare_database(settings)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        with transaction(sessions) as session:
            for event in export_events(session, tenant=None if args.all_tenants else args.tenant,
                                       since=since, until=until):
                out.write(json.dumps(event, default=str, sort_keys=True) + "\n")
                count += 1
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"{count} audit events written to {args.output}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("audit", help="export the audit log as JSON lines")
    p.add_argument("action", choices=["export"])
    p.add_argument("--tenant", default="default")
    p.add_argument("--all-tenants", action="store_true", help="every tenant's events")
    p.add_argument("--since", help="from this time (ISO 8601, inclusive)")
    p.add_argument("--until", help="to this time (ISO 8601, exclusive)")
    p.add_argument("--output", "-o", help="a file to write (default: stdout)")
    p.set_defaults(fn=cmd_audit)
