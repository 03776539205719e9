"""``metabuilder tenants|tokens``: who may do what."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from metabuilder.domain.access import Role
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings

# The store and runtime are imported by the commands that use them, so that building the parser
# (every `metabuilder` call) stays cheap.


def cmd_tenants(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.store import access
    from metabuilder.store.audit import write_audit
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.action == "create":
            tenant = access.create_tenant(session, args.tenant_id, args.name)
            write_audit(session, "tenant.created", tenant=tenant.id, actor=cli_actor(), target=f"tenant:{tenant.id}",
                        after={"id": tenant.id, "name": tenant.name})
            print(f"tenant {tenant.id!r} created ({tenant.name})")
        elif args.json:
            print_json([{"id": t.id, "name": t.name, "created_at": t.created_at} for t in access.list_tenants(session)])
        else:
            for tenant in access.list_tenants(session):
                print(f"{tenant.id:<24} {tenant.name}")
    return 0


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.store import access
    from metabuilder.store.audit import write_audit
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.action == "create":
            before = access.user_role(session, args.tenant, args.user)
            new = access.create_token(session, args.tenant, args.user, Role(args.role))
            write_audit(session, "token.created", tenant=new.tenant, actor=cli_actor(), target=f"token:{new.token_id}",
                        before={"user": new.user, "role": before.value} if before else None,
                        after={"user": new.user, "role": new.role.value, "prefix": new.token[:10]})
            print(f"token for {new.user!r} ({new.role}) of tenant {new.tenant!r}, id {new.token_id}:")
            print(new.token)
            print("it is shown only now; keep it somewhere safe")
        elif args.action == "revoke":
            revoked = access.revoke_token(session, args.token_id) if args.token_id else None
            if revoked is None:
                raise ValueError(f"no active token with id {args.token_id!r}")
            write_audit(session, "token.revoked", tenant=revoked.tenant, actor=cli_actor(),
                        target=f"token:{args.token_id}", before={"user": revoked.user, "revoked": False},
                        after={"user": revoked.user, "revoked": True})
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
