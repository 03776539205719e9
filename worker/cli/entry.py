"""``metabuilder``: the command line of Meta-Builder: parse, load the settings, run the command,
and turn what it raised into a message and an exit status (see ``exits``)."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Sequence

from metabuilder.worker.cli.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUN_FAILED, known_exit
from metabuilder.worker.cli.parser import STORY_COMMANDS, build_parser


def _log():  # type: ignore[no-untyped-def]
    import structlog

    return structlog.get_logger("metabuilder.cli")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "concurrency", 1) < 1:
        print("metabuilder: error: --concurrency must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    settings = None
    if getattr(args, "needs_settings", True):
        from metabuilder.worker.logging import configure_logging
        from metabuilder.worker.settings import Settings, SettingsError

        try:
            settings = Settings.from_env()
        except SettingsError as err:
            print(f"metabuilder: bad setting: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.command in STORY_COMMANDS and not os.environ.get("META_BUILDER_LOG_LEVEL"):
            from dataclasses import replace

            settings = replace(settings, log_level="warning")  # the story on stdout, not info lines between
        configure_logging(settings, quiet_sdk=args.command not in ("worker", "up"))
    try:
        if not inspect.iscoroutinefunction(args.fn):
            return int(args.fn(args, settings))
        import asyncio

        return asyncio.run(args.fn(args, settings))
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        workflow_failure = sys.modules.get("temporalio.client")
        if workflow_failure is not None and isinstance(err, workflow_failure.WorkflowFailureError):
            print(f"metabuilder: run failed: {err.cause}", file=sys.stderr)
            return EXIT_RUN_FAILED
        code = known_exit(err)
        if code is None:  # entry point: log the unexpected with its traceback
            _log().exception("cli.crashed")
            return 70
        print(f"metabuilder: {err}", file=sys.stderr)
        return code


def entry_point() -> None:
    """Console-script entry: run ``main`` and leave without interpreter finalization.

    Once the command is done and its output flushed, nothing is left to clean up; but
    finalizing the interpreter while the Temporal SDK's native runtime threads are alive
    was seen to abort the process (SIGABRT) about once in a hundred short CLI runs,
    turning a correct exit status into -6.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
