"""``metabuilder promote RUN``: fast-forward a succeeded run's target branch to its healed head.

With META_BUILDER_API_TOKEN set it asks the API (POST /api/meta/v4/runs/{id}/promote, admins
only); without, it promotes straight from the database and the shared repository, as an operator
on this host. A run with a low confidence or risk signals is promoted by two people: one admin
approves its risks (--approve-risks --reason R), another promotes it."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING, Any

from metabuilder.worker.cli.exits import CliError
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("promote", help="fast-forward a succeeded run's target branch to its head",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--to", dest="target_branch", help="the branch to fast-forward (default: the one the run "
                                                      "started from)")
    p.add_argument("--approve-risks", action="store_true",
                   help="approve a low-confidence or risky run's risks (another admin then promotes it)")
    p.add_argument("--reason", default="", help="why (kept in the audit log; needed with --approve-risks)")
    p.add_argument("--user", default=getpass.getuser(), help="who promotes, for the audit log (without a token)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_promote)


async def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    body = {"target_branch": args.target_branch, "approve_risks": args.approve_risks, "reason": args.reason}
    if settings.api_token:
        from urllib.parse import quote

        from metabuilder.worker.cli.api_client import call_api

        out: dict[str, Any] = call_api(settings, "POST", f"/api/meta/v4/runs/{quote(args.run_id, safe='')}/promote",
                                       body)
    else:
        from metabuilder.service.promote import promote
        from metabuilder.worker.runtime import prepare_database

        if not args.run_id.strip():
            raise CliError("RUN is empty: name the run to promote")
        done = await promote(prepare_database(settings), args.run_id, tenant=None, actor=f"cli:{args.user}",
                             target_branch=args.target_branch, approve_risks=args.approve_risks, reason=args.reason)
        out = {"run_id": done.run_id, "target_branch": done.target_branch, "commit": done.commit,
               "previous": done.previous, "risks_approved": done.risks, "approved_by": done.approved_by,
               "confidence": None if done.confidence is None else
               {"score": done.confidence.score, "level": done.confidence.level.value}}
    if args.json:
        print_json(out)
        return 0
    was = f"from {out['previous'][:12]}" if out["previous"] else "(new branch)"
    print(f"run {out['run_id']} promoted: {out['target_branch']} is at {out['commit'][:12]} {was}")
    by = ", ".join(out.get("approved_by") or [])
    for why in out["risks_approved"]:
        print(f"  approved by {by}: {why}")
    return 0
