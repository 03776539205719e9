"""``metabuilder webhooks list|add|delete|deliveries``: a tenant's webhooks and their delivery log."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import notifications as service
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    out: Any
    with transaction(sessions) as session:
        match args.action:
            case "add":
                raw: dict[str, Any] = {"url": args.url or "", "format": args.format}
                if args.events:
                    raw["events"] = [e.strip() for e in args.events.split(",") if e.strip()]
                out = asdict(service.create_webhook(session, args.tenant, raw, where="webhook",
                                                    tenant=None, actor=cli_actor()))
            case "delete":
                service.delete_webhook(session, args.tenant, _id(args), tenant=None, actor=cli_actor())
                out = {"deleted": args.id}
            case "deliveries":
                out = [asdict(d) for d in service.delivery_log(session, args.tenant, _id(args), tenant=None,
                                                               limit=args.limit)]
            case _:
                out = [asdict(w) for w in service.list_webhooks(session, args.tenant, tenant=None)]
    if args.json:
        print_json(out)
    elif args.action == "add":
        print(f"webhook {out['id']} -> {out['url']} ({out['format']}: {', '.join(out['events'])})")
        print(f"signing secret (shown once): {out['secret']}")
    elif args.action == "delete":
        print(f"webhook {args.id} deleted")
    elif args.action == "deliveries":
        for d in out:
            print(f"{d['created_at']:%Y-%m-%d %H:%M:%S}  {d['event']:<16} {d['status']:<10} attempts {d['attempts']}"
                  + (f"  last {d['last_status_code'] or d['last_error']}" if d["status"] != "delivered" else ""))
        if not out:
            print("no deliveries")
    else:
        for w in out:
            print(f"{w['id']}  {w['url']}  {w['format']}  {', '.join(w['events'])}"
                  + ("" if w["enabled"] else "  (disabled)"))
        if not out:
            print(f"tenant {args.tenant!r} has no webhooks")
    return 0


def _id(args: argparse.Namespace) -> str:
    if not args.id:
        from metabuilder.service.errors import BadRequest

        raise BadRequest(f"webhooks {args.action}: --id is required")
    return str(args.id)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("webhooks", help="a tenant's webhooks (gate and run notifications) and their delivery log")
    p.add_argument("action", choices=["list", "add", "delete", "deliveries"])
    p.add_argument("--tenant", default="default")
    p.add_argument("--url", help="with add: the receiver (http:// or https://)")
    p.add_argument("--format", choices=["json", "slack"], default="json")
    p.add_argument("--events", help="with add: comma-separated (gate.opened, gate.expiring, run.failed, "
                                    "run.rolled_back; default all)")
    p.add_argument("--id", help="with delete and deliveries: the webhook")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_webhooks)
