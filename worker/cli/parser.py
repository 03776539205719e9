"""The ``metabuilder`` argument parser: one sub-command group per module of this package."""

from __future__ import annotations

import argparse

from metabuilder.worker.cli import (
    access,
    approvals,
    audit,
    breakers,
    budgets,
    canary,
    chaos,
    classify,
    completion,
    doctor,
    evaluate,
    hosts,
    plans,
    privacy,
    processes,
    promote,
    queues,
    replay,
    runs,
    temporal,
    webhooks,
)
from metabuilder.worker.cli.version import VersionAction

STORY_COMMANDS = ("demo", "run", "eval")
"""Commands whose output is a story for a person: they log at warning level unless
``META_BUILDER_LOG_LEVEL`` asks for more."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metabuilder", description="Self-healing build runs on Temporal.")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runs.add_parsers(sub)
    processes.add_parsers(sub)
    classify.add_parser(sub)
    access.add_parsers(sub)
    approvals.add_parsers(sub)
    breakers.add_parser(sub)
    queues.add_parser(sub)
    chaos.add_parser(sub)
    audit.add_parser(sub)
    privacy.add_parser(sub)
    doctor.add_parser(sub)
    temporal.add_parser(sub)
    plans.add_parser(sub)
    evaluate.add_parser(sub)
    replay.add_parser(sub)
    promote.add_parser(sub)
    hosts.add_parsers(sub)
    budgets.add_parser(sub)
    canary.add_parser(sub)
    webhooks.add_parser(sub)
    completion.add_parser(sub, parser)
    return parser
