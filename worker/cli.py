"""``metabuilder``: the command line of Meta-Builder.

Exit status: 0 success; 1 the run failed or was cancelled; 2 bad input (plan, workspace,
settings, arguments); 3 Temporal or the database could not be reached.
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from metabuilder.domain.policy import ENV_VARS
from metabuilder.worker import admin_cmd, classify_cmd, completion, plan_cmd, temporal_cmd
from metabuilder.worker.json_out import print_json
from metabuilder.worker.version import VersionAction

if TYPE_CHECKING:
    from temporalio.client import Client

    from metabuilder.worker.settings import Settings

# Each command imports what it uses when it runs: `metabuilder --help` and `classify` must not pay
# for FastAPI, SQLAlchemy and the Temporal client (about a second) that the run commands need.

EXIT_OK, EXIT_RUN_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


async def _needs_local_workers(client: Client, settings: Settings) -> bool:
    from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue
    from metabuilder.worker.follow import has_pollers

    queue = task_queue(settings.task_queue_prefix, WORKFLOW_QUEUE)
    return not await has_pollers(client, queue, workflow_queue=True)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.domain.plans import parse_plan, read_plan_file
    from metabuilder.domain.runs import RunStatus, web_ui_link
    from metabuilder.service.runs import SubmitOptions, resolve_autofix, submit
    from metabuilder.worker.follow import follow, print_summary
    from metabuilder.worker.runtime import POOLS, build_workers, connect, prepare_database, running_workers

    plan_path = Path(args.plan)
    plan_text = read_plan_file(plan_path)  # bounded, and a binary file is named as such
    parse_plan(plan_text, source=str(plan_path))  # reject a bad plan before touching anything
    sessions = prepare_database(settings)
    client = await connect(settings)
    local = args.with_worker or (not args.detach and await _needs_local_workers(client, settings))
    overrides = _key_values(args.set)
    if args.autofix is not None:
        overrides["enabled"] = args.autofix
    effective = resolve_autofix(settings.autofix, sessions, args.tenant, overrides)
    opts = SubmitOptions(shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix,
                         tenant=args.tenant, heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
                         autofix=effective)
    submitted = await submit(client, plan_text, str(plan_path), Path(args.workspace), opts, run_id=args.run_id)
    link = web_ui_link(settings.ui_url, settings.temporal_namespace, submitted.run_id)
    story = sys.stderr if args.detach else sys.stdout  # detached, stdout carries the run id alone
    print(f"run {submitted.run_id} started: plan {submitted.plan.name!r}, {len(submitted.plan.steps)} steps, "
          f"workspace {submitted.workspace.source} at {submitted.workspace.base_commit[:12]}", file=story)
    a = effective.settings
    print(f"  auto-fix: {'on' if a.enabled else 'off'}" + (
        f" (at most {a.max_total_attempts} attempts per run, {a.max_per_step_attempts} per step, "
        f"backoff cap {a.backoff_cap_seconds:g}s)" if a.enabled else ""), file=story)
    if link:
        print(f"  Web UI: {link}", file=story)
    if args.detach:
        if args.json:
            print_json({"run_id": submitted.run_id, "workflow_id": submitted.handle.id, "web_ui_url": link})
        else:
            print(submitted.run_id)
        return EXIT_OK
    if local:
        print("  (no worker is polling; running workers in this process)")
        async with running_workers(build_workers(client, settings, sessions, POOLS)):
            view = await follow(submitted.handle)
    else:
        view = await follow(submitted.handle)
    print_summary(view, repo=settings.shared_repo, ui_link=link)
    return EXIT_OK if view.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED


def _key_values(pairs: list[str] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--set {pair!r}: expected KEY=VALUE with KEY one of {', '.join(ENV_VARS)}")
        out[key.strip()] = value.strip()
    return out


def cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    """Show (and change) a tenant's auto-fix settings, with where each value comes from."""
    from metabuilder.domain.policy import effective_settings, parse_overrides
    from metabuilder.store import repository
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        current = repository.tenant_autofix(session, args.tenant)
        if args.reset or args.set:
            changed = {} if args.reset else {**current, **parse_overrides(_key_values(args.set), "--set")}
            repository.set_tenant_autofix(session, args.tenant, changed)
            current = changed
    effective = effective_settings(settings.autofix, current)
    if args.json:
        print_json({"tenant": args.tenant, "environment": settings.environment.value,
                    "settings": {key: getattr(effective.settings, key) for key in ENV_VARS},
                    "sources": dict(effective.sources), "variables": dict(ENV_VARS)})
        return EXIT_OK
    print(f"auto-fix settings of tenant {args.tenant!r} (environment {settings.environment.value}):")
    for key, var in ENV_VARS.items():
        value = getattr(effective.settings, key)
        shown = ("true" if value else "false") if isinstance(value, bool) else f"{value:g}"
        print(f"  {key:<22} {shown:<6} from {effective.sources[key]:<8} ({var})")
    return EXIT_OK


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.domain.runs import web_ui_link
    from metabuilder.store import repository
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        run = repository.get_run(session, args.run_id)
        steps = repository.run_steps(session, args.run_id) if run else []
        if run is None:
            raise CliError(f"unknown run id {args.run_id!r} (no such run in {settings.database_url})")
        if args.json:
            from metabuilder.store.views import run_fields, step_fields

            print_json({**run_fields(run), "web_ui_url": web_ui_link(settings.ui_url, settings.temporal_namespace,
                                                                      run.id),
                        "steps": [step_fields(step) for step in steps]})
            return EXIT_OK
        print(f"run {run.id}: {run.status}  tenant {run.tenant_id}  workflow {run.workflow_id}")
        print(f"  workspace: branch {run.branch} of {run.repo_url}")
        print(f"  base {run.base_commit[:12]}  head {run.head_commit[:12]}")
        if run.failed_step:
            print(f"  failed step: {run.failed_step}: {run.error}")
        for step in steps:
            code = "" if step.exit_code is None else f" exit {step.exit_code}"
            took = "" if step.duration_seconds is None else f" {step.duration_seconds:.2f}s"
            print(f"  [{step.step_index}] {step.name:<16} attempt {step.attempt} {step.status}{code}{took}"
                  f"  log {step.log_path}")
    link = web_ui_link(settings.ui_url, settings.temporal_namespace, args.run_id)
    if link:
        print(f"  Web UI: {link}")
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from temporalio.service import RPCError, RPCStatusCode

    from metabuilder.domain.runs import workflow_id
    from metabuilder.worker.runtime import connect

    client = await connect(settings, start_embedded=False)
    handle = client.get_workflow_handle(workflow_id(args.run_id))
    try:
        await handle.cancel()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise CliError(f"unknown run id {args.run_id!r} (no workflow {workflow_id(args.run_id)})") from None
        raise
    print(f"cancellation requested for run {args.run_id}")
    return EXIT_OK


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.domain.runs import task_queue
    from metabuilder.worker.runtime import (
        POOLS,
        build_workers,
        connect,
        parse_pools,
        prepare_database,
        running_workers,
        sdk_metrics_runtime,
        serve_metrics,
    )

    pools = parse_pools(args.queues or ",".join(POOLS))
    sessions = prepare_database(settings)
    runtime = sdk_metrics_runtime(settings)
    client = await connect(settings, start_embedded=False, runtime=runtime)
    workers = build_workers(client, settings, sessions, pools, concurrency=args.concurrency)
    metrics = serve_metrics(settings)
    log = _log()
    log.info("worker.started", queues=[task_queue(settings.task_queue_prefix, p) for p in pools],
             address=settings.address, concurrency=args.concurrency, metrics=metrics,
             sdk_metrics=_sdk_metrics_url(settings))
    async with running_workers(workers):
        await _until_signalled()
    log.info("worker.stopped")
    return EXIT_OK


def _sdk_metrics_url(settings: Settings) -> str | None:
    if not settings.sdk_metrics_port:
        return None
    return f"http://{settings.metrics_host}:{settings.sdk_metrics_port}/metrics"


async def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from metabuilder.domain.runs import task_queue
    from metabuilder.worker.api_server import api_server
    from metabuilder.worker.devserver import DevServer, port_open
    from metabuilder.worker.runtime import POOLS, build_workers, connect, prepare_database, running_workers, sdk_metrics_runtime

    if not settings.embedded:
        raise CliError("`metabuilder up` runs the embedded dev server; unset TEMPORAL_ADDRESS or use `worker`")
    if port_open("127.0.0.1", settings.dev_server_port):
        raise CliError(f"something already listens on port {settings.dev_server_port} "
                       "(a dev server started earlier? stop it with `metabuilder server stop`)")
    server = DevServer(settings.home / "temporal", settings.dev_server_port, settings.dev_server_ui_port)
    server.start(detach=False)
    try:
        await server.wait_ready()
        sessions = prepare_database(settings)
        client = await connect(settings, start_embedded=False, runtime=sdk_metrics_runtime(settings))
        print(f"Temporal dev server on {server.address}; Web UI {settings.ui_url}")
        sdk = _sdk_metrics_url(settings)
        print(f"metrics on http://{settings.api_host}:{settings.api_port}/metrics"
              + (f"; Temporal SDK metrics on {sdk}" if sdk else ""))
        print(f"workers polling {', '.join(task_queue(settings.task_queue_prefix, p) for p in POOLS)}")
        api = api_server(settings, sessions, settings.api_host, settings.api_port)
        print(f"API on http://{settings.api_host}:{settings.api_port} (docs /docs); Ctrl-C stops everything")
        async with running_workers(build_workers(client, settings, sessions, POOLS,
                                                 concurrency=args.concurrency)):
            serving = asyncio.create_task(api.serve())
            await _until_signalled()
            api.should_exit = True
            await serving
    finally:
        server.stop()
    return EXIT_OK


async def cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.worker.devserver import DevServer, port_open

    server = DevServer(settings.home / "temporal", settings.dev_server_port, settings.dev_server_ui_port)
    if args.action == "start":
        if port_open("127.0.0.1", settings.dev_server_port):
            print(f"a server already listens on {server.address}")
            return EXIT_OK
        server.start(detach=True)
        await server.wait_ready()
        print(f"Temporal dev server started on {server.address}; Web UI {settings.ui_url}; data {server.db_file}")
    elif args.action == "stop":
        print("stopped" if server.stop() else "no dev server recorded in " + str(server.pid_file))
    else:
        up = port_open("127.0.0.1", settings.dev_server_port)
        print(f"{server.address}: {'up' if up else 'down'}; data {server.db_file}")
        return EXIT_OK if up else EXIT_UNAVAILABLE
    return EXIT_OK


async def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.worker.runtime import prepare_database

    prepare_database(settings)
    print(f"database at head: {settings.database_url}")
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.worker.demo import run_demo

    return await run_demo(settings)


async def _until_signalled() -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


STORY_COMMANDS = ("demo", "run")
"""Commands whose output is a story for a person: they log at warning level unless
``META_BUILDER_LOG_LEVEL`` asks for more."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metabuilder", description="Self-healing build runs on Temporal.")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="run the demo build plans on the embedded defaults")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("run", help="submit a plan and follow the run (exit 0 only if it succeeds)")
    p.add_argument("plan", help="plan file (YAML)")
    p.add_argument("--workspace", "-w", default=".", help="git working tree to build (default: .)")
    p.add_argument("--detach", action="store_true", help="submit only; print the bare run id and return")
    p.add_argument("--json", action="store_true", help="with --detach: print the run id, workflow id and link as JSON")
    p.add_argument("--with-worker", action="store_true", help="run workers in this process while following")
    p.add_argument("--run-id", help="run id to use (default: a new uuid)")
    p.add_argument("--tenant", default="default")
    p.add_argument("--autofix", action=argparse.BooleanOptionalAction, default=None,
                   help="turn self-healing on or off for this run (default: tenant, then platform setting)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override an auto-fix setting for this run ({', '.join(ENV_VARS)})")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("settings", help="show or change a tenant's auto-fix settings")
    p.add_argument("--tenant", default="default")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override ({', '.join(ENV_VARS)})")
    p.add_argument("--reset", action="store_true", help="drop the tenant's overrides (platform defaults apply)")
    p.add_argument("--json", action="store_true", help="the settings and their sources as JSON")
    p.set_defaults(fn=cmd_settings)

    p = sub.add_parser("status", help="show a run from the database projection")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="the run and its step attempts as JSON (the API's fields)")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("cancel", help="cancel a run (the running step's process is killed)")
    p.add_argument("run_id")
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("worker", help="run workers for some pools until SIGINT/SIGTERM")
    p.add_argument("--queues", help="pools to serve, comma-separated (default: all: workflow,cpu,io,llm)")
    p.add_argument("--concurrency", type=int, default=4, help="steps run at once per pool (default: 4)")
    p.set_defaults(fn=cmd_worker)

    p = sub.add_parser("up", help="dev server, workers for all pools and the API in one foreground process")
    p.add_argument("--concurrency", type=int, default=4)
    p.set_defaults(fn=cmd_up)

    p = sub.add_parser("server", help="start, stop or check the embedded dev server in the background")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(fn=cmd_server)

    classify_cmd.add_parser(sub)
    admin_cmd.add_parsers(sub)
    temporal_cmd.add_parser(sub)
    plan_cmd.add_parser(sub)
    completion.add_parser(sub, parser)

    p = sub.add_parser("db", help="database schema")
    p.add_argument("action", choices=["upgrade"], help="upgrade: apply Alembic migrations up to head")
    p.set_defaults(fn=cmd_db)
    return parser


def _log():  # type: ignore[no-untyped-def]
    import structlog

    return structlog.get_logger("metabuilder.cli")


# Error type -> exit status, by module and class name: a module that was never imported cannot
# have raised, so the table is checked without importing anything.
_ERROR_EXITS: list[tuple[str, tuple[str, ...], int]] = [
    ("metabuilder.domain.plans", ("PlanError",), EXIT_BAD_INPUT),
    ("metabuilder.adapters.git", ("NotAGitRepository",), EXIT_BAD_INPUT),
    ("metabuilder.service.runs", ("RunExistsError",), EXIT_BAD_INPUT),
    ("metabuilder.service.errors", ("NotFound",), EXIT_BAD_INPUT),
    ("metabuilder.worker.devserver", ("DevServerError",), EXIT_UNAVAILABLE),
    ("metabuilder.adapters.git", ("GitError",), EXIT_UNAVAILABLE),
    ("temporalio.service", ("RPCError",), EXIT_UNAVAILABLE),
    ("metabuilder.service.errors", ("Unavailable",), EXIT_UNAVAILABLE),
]


def _known_exit(err: BaseException) -> int | None:
    if isinstance(err, CliError):
        return err.code
    for module_name, names, code in _ERROR_EXITS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(err, tuple(getattr(module, n) for n in names)):
            return code
    if isinstance(err, (ValueError, OSError)):
        return getattr(err, "code", EXIT_BAD_INPUT)
    return None


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
        code = _known_exit(err)
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


if __name__ == "__main__":
    entry_point()
