"""``metabuilder approvals|approve|reject``: the approval gates runs wait at, and deciding them."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING

from metabuilder.domain.approvals import Decision, GateStatus, GateView
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings

# The store, service and runtime are imported by the commands that use them, so that building the
# parser (every `metabuilder` call) stays cheap.


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
    decision = Decision.APPROVE if args.command == "approve" else Decision.REJECT
    if settings.api_token:
        gate = _decide_through_api(args, settings, decision)
    else:
        from metabuilder.service.approvals import decide_gate
        from metabuilder.worker.runtime import connect, prepare_database

        # Straight to Temporal as an operator: the run still checks that ``--by`` holds a
        # deciding role in its tenant.
        sessions = prepare_database(settings)
        gate = await decide_gate(lambda: connect(settings, start_embedded=False), sessions, args.gate_id, decision,
                                 by=args.by or getpass.getuser(), reason=args.reason or "")
    then = "goes on" if decision is Decision.APPROVE else f"fails: {gate.decision_reason}"
    print(f"gate {gate.gate_id} {gate.status} by {gate.decided_by}; run {gate.run_id} {then}")
    return 0


def _decide_through_api(args: argparse.Namespace, settings: Settings, decision: Decision) -> GateView:
    from urllib.parse import quote

    from metabuilder.worker.cli.api_client import call_api
    from metabuilder.worker.cli.exits import CliError

    if args.by:
        raise CliError("--by cannot be used with META_BUILDER_API_TOKEN: the API decides as the token's user")
    answer = call_api(settings, "POST", f"/api/meta/v3/approvals/{quote(args.gate_id, safe='')}/{decision.value}",
                      {"reason": args.reason or ""})
    return GateView(**{k: v for k, v in answer.items() if k in GateView.__dataclass_fields__})


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
        p.add_argument("--by", help="who decides, a user of the run's tenant with the admin or owner role "
                                      "(default: your user name; with META_BUILDER_API_TOKEN: the token's user)")
        p.set_defaults(fn=cmd_decide)
