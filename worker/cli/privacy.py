"""``metabuilder privacy show|set``: a tenant's privacy mode and allowlists, with where each comes from."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


def cmd_privacy(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import privacy as service
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.action == "set":
            changes = {} if args.reset else dict(service.tenant_privacy(
                session, settings.privacy, args.tenant, tenant=None).overrides)
            for key, value in (("mode", args.mode), ("llm_allowlist", args.llm_allow),
                               ("domain_allowlist", args.domain_allow), ("redact_patterns", args.redact)):
                if value is not None:
                    changes[key] = value
            current = service.change_tenant_privacy(session, settings.privacy, args.tenant, changes, where="--set",
                                                    tenant=None, actor=cli_actor())
        else:
            current = service.tenant_privacy(session, settings.privacy, args.tenant, tenant=None)
    e = current.effective
    values = {"mode": e.mode.value, "llm_allowlist": list(e.llm_allowlist),
              "domain_allowlist": list(e.tenant_domains) if e.tenant_domains is not None else None,
              "platform_domain_allowlist": list(e.platform_domains), "redact_patterns": list(e.redact_patterns)}
    if args.json:
        print_json({"tenant": current.tenant, **values, "sources": dict(e.sources)})
        return 0
    print(f"privacy of tenant {current.tenant!r}:")
    for key, value in values.items():
        shown = ", ".join(value) if isinstance(value, list) else ("(the platform's only)" if value is None else value)
        print(f"  {key:<26} {shown or '(empty)'}  [{e.sources.get(key, 'platform')}]")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("privacy", help="show or set a tenant's privacy mode and allowlists")
    p.add_argument("action", choices=["show", "set"])
    p.add_argument("--tenant", default="default")
    p.add_argument("--mode", choices=["none", "local", "redacted", "open"])
    p.add_argument("--llm-allow", help="comma-separated LLM hosts allowed under local")
    p.add_argument("--domain-allow", help="comma-separated hosts outbound calls may go to")
    p.add_argument("--redact", help="comma-separated regular expressions masked in prompts")
    p.add_argument("--reset", action="store_true", help="with set: drop the tenant's own values first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_privacy)
