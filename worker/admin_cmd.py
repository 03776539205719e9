"""``metabuilder tenants|tokens|approvals|approve|reject|api``: who may do what, gates, and the API."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from metabuilder.domain.access import Role
from metabuilder.domain.approvals import Decision, GateStatus
from metabuilder.worker.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings

# The store, service and runtime are imported by the commands that use them, so that building the
# parser (every `metabuilder` call) stays cheap.


def cmd_tenants(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.store import access
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.action == "create":
            tenant = access.create_tenant(session, args.tenant_id, args.name)
            print(f"tenant {tenant.id!r} created ({tenant.name})")
        elif args.json:
            print_json([{"id": t.id, "name": t.name, "created_at": t.created_at} for t in access.list_tenants(session)])
        else:
            for tenant in access.list_tenants(session):
                print(f"{tenant.id:<24} {tenant.name}")
    return 0


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.store import access
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.action == "create":
            new = access.create_token(session, args.tenant, args.user, Role(args.role))
            print(f"token for {new.user!r} ({new.role}) of tenant {new.tenant!r}, id {new.token_id}:")
            print(new.token)
            print("it is shown only now; keep it somewhere safe")
        elif args.action == "revoke":
            if not args.token_id or not access.revoke_token(session, args.token_id):
                raise ValueError(f"no active token with id {args.token_id!r}")
            print(f"token {args.token_id} revoked")
        elif args.json:
            print_json([{"token_id": token.id, "prefix": token.prefix, "user": user.name, "role": user.role,
                         "created_at": token.created_at, "revoked_at": token.revoked_at}
                        for token, user in access.list_tokens(session, args.tenant)])
        else:
            for token, user in access.list_tokens(session, args.tenant):
                state = f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active"
                print(f"{token.id}  {token.prefix}...  {user.name:<20} {user.role:<8} {state}")
    return 0


def cmd_approvals(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.store import approvals
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    status = None if args.all else GateStatus.PENDING.value
    with transaction(sessions) as session:
        gates = approvals.list_gates(session, tenant=args.tenant, status=status, limit=500)
        if args.json:
            from metabuilder.store.views import gate_fields

            print_json([gate_fields(g) for g in gates])
            return 0
        if not gates:
            print(f"no {'' if args.all else 'pending '}approval gates for tenant {args.tenant!r}")
        for g in gates:
            print(f"{g.id}  {g.status:<8} {g.kind:<13} step {g.step_name!r}  approve -> {g.action}"
                  f"  expires {g.expires_at:%Y-%m-%d %H:%M} UTC (then {g.on_expiry})")
            print(f"    {g.reason}")
            for line in g.evidence[:3]:
                print(f"    | {line}")
            if g.proposal:
                risk = "high-risk " if g.proposal["high_risk"] else ""
                print(f"    proposed {risk}patch ({g.proposal['fixer']}) to {', '.join(g.proposal['files'])}:")
                for finding in g.proposal["findings"]:
                    print(f"    ! {finding}")
                for line in g.proposal["diff"].splitlines():
                    print(f"    {line}")
            if g.decided_by:
                print(f"    decided by {g.decided_by} at {g.decided_at:%Y-%m-%d %H:%M:%S}: {g.decision_reason or ''}")
    return 0


async def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service.approvals import decide_gate
    from metabuilder.worker.runtime import connect, prepare_database

    decision = Decision.APPROVE if args.command == "approve" else Decision.REJECT
    sessions = prepare_database(settings)
    gate = await decide_gate(lambda: connect(settings, start_embedded=False), sessions, args.gate_id, decision,
                             by=args.by or getpass.getuser(), reason=args.reason or "")
    then = "goes on" if decision is Decision.APPROVE else f"fails: {gate.decision_reason}"
    print(f"gate {gate.gate_id} {gate.status} by {gate.decided_by}; run {gate.run_id} {then}")
    return 0


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from metabuilder.worker.api_server import serve_api, serve_api_processes
    from metabuilder.worker.runtime import prepare_database

    host, port = args.host or settings.api_host, args.port or settings.api_port
    workers = args.workers or settings.api_workers
    if workers < 1:
        raise ValueError(f"--workers {workers}: expected at least 1")
    sessions = prepare_database(settings)  # once, before any process serves
    if workers == 1:
        asyncio.run(serve_api(settings, sessions, host, port))
    else:
        serve_api_processes(settings, host, port, workers)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tenants", help="create or list tenants")
    p.add_argument("action", choices=["create", "list"])
    p.add_argument("tenant_id", nargs="?", help="the new tenant's id (for create)")
    p.add_argument("--name", help="a display name (default: the id)")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(fn=cmd_tenants)

    p = sub.add_parser("tokens", help="issue, list or revoke API tokens (stored hashed, shown once)")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("token_id", nargs="?", help="the token to revoke")
    p.add_argument("--tenant", default="default")
    p.add_argument("--user", default=getpass.getuser(), help="who the token is for (default: you)")
    p.add_argument("--role", choices=[r.value for r in Role], default=Role.VIEWER.value)
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(fn=cmd_tokens)

    p = sub.add_parser("approvals", help="list approval gates (pending ones unless --all)")
    p.add_argument("action", nargs="?", choices=["list"], default="list")
    p.add_argument("--tenant", default="default")
    p.add_argument("--all", action="store_true", help="decided gates too")
    p.add_argument("--json", action="store_true", help="the gates as JSON (the API's fields)")
    p.set_defaults(fn=cmd_approvals)

    for name, help_text in (("approve", "approve a pending gate: the run goes on"),
                            ("reject", "reject a pending gate: the run fails with the reason")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("gate_id", metavar="GATE")
        p.add_argument("--reason", required=name == "reject", help="why (required to reject)")
        p.add_argument("--by", help="who decides (default: your user name)")
        p.set_defaults(fn=cmd_decide)

    p = sub.add_parser("api", help="serve the HTTP API (OpenAPI at /openapi.json, docs at /docs)")
    p.add_argument("--host", help="address to listen on (default: META_BUILDER_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: META_BUILDER_API_PORT or 5001)")
    p.add_argument("--workers", type=int, help="processes sharing the port (default: META_BUILDER_API_WORKERS or 1)")
    p.set_defaults(fn=cmd_api)
