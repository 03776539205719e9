"""``metabuilder plan validate|schema``: check plan files as a run would, without Temporal or a database."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built on every call: settings load only when the command runs
    from metabuilder.worker.settings import Settings

SCHEMA = "plan.schema.json"


def cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "schema":
        print(resources.files("metabuilder.domain").joinpath(SCHEMA).read_text(encoding="utf-8"), end="")
        return 0
    from metabuilder.domain.plans import PlanError, load_plan

    if not args.files:
        raise ValueError("plan validate: name at least one plan file")
    bad = 0
    for path in args.files:
        try:
            plan = load_plan(path)
        except PlanError as err:
            bad += 1
            print(f"{path}: invalid", file=sys.stderr)
            for problem in err.problems:
                print(f"  {problem}", file=sys.stderr)
            continue
        print(f"{path}: ok (plan {plan.name!r}, {len(plan.steps)} step{'s' if len(plan.steps) != 1 else ''})")
    return 2 if bad else 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plan", help="validate plan files (no server needed), or print the plan JSON Schema")
    p.add_argument("action", choices=["validate", "schema"])
    p.add_argument("files", nargs="*", metavar="FILE", help="plan files to validate")
    p.set_defaults(fn=cmd_plan)
