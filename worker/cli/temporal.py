"""``metabuilder temporal setup``: what an admin does once per namespace of an external server."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built on every call: settings load only when the command runs
    from metabuilder.worker.settings import Settings


async def cmd_temporal(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.service import RPCError, RPCStatusCode

    from metabuilder.worker.runtime import register_search_attributes

    try:
        namespace, names = await register_search_attributes(settings)
    except RPCError as err:
        if err.status == RPCStatusCode.PERMISSION_DENIED:
            raise PermissionError(
                f"the server refused to register search attributes ({err.message}). On Temporal Cloud, add "
                "them as Keyword attributes in the namespace's settings (UI or tcld): "
                "MetaBuilderRunStatus, MetaBuilderTenant, MetaBuilderPlan") from None
        raise
    print(f"search attributes registered in namespace {namespace!r}: {', '.join(names)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("temporal", help="one-off setup of an external Temporal namespace (search attributes)")
    p.add_argument("action", choices=["setup"], help="setup: register Meta-Builder's search attributes")
    p.set_defaults(fn=cmd_temporal)
