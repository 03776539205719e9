"""``metabuilder run|status|cancel|settings|demo``: submit a plan and follow its run, read a run
back, cancel it, and a tenant's auto-fix settings."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from metabuilder.domain.policy import ENV_VARS
from metabuilder.worker.cli.exits import EXIT_OK, EXIT_RUN_FAILED, CliError
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from temporalio.client import Client

    from metabuilder.worker.settings import Settings

# Each command imports what it uses when it runs: `metabuilder --help` and `classify` must not pay
# for FastAPI, SQLAlchemy and the Temporal client (about a second) that the run commands need.


async def _needs_local_workers(client: Client, settings: Settings) -> bool:
    from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue
    from metabuilder.worker.cli.follow import has_pollers

    queue = task_queue(settings.task_queue_prefix, WORKFLOW_QUEUE)
    return not await has_pollers(client, queue, workflow_queue=True)


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.domain.plans import parse_plan, read_plan_file
    from metabuilder.domain.runs import RunStatus, web_ui_link
    from metabuilder.service.runs import SubmitOptions, resolve_autofix, submit
    from metabuilder.worker.cli.follow import follow, print_summary
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
    opts = SubmitOptions.of(settings, tenant=args.tenant, autofix=effective)
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
    from metabuilder.service.settings import change_tenant_settings, tenant_settings
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.reset or args.set:
            changes = {} if args.reset else _key_values(args.set)
            current = change_tenant_settings(session, settings.autofix, args.tenant, changes, merge=not args.reset,
                                             where="--set", tenant=None)
        else:
            current = tenant_settings(session, settings.autofix, args.tenant, tenant=None)
    effective = current.effective
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
    from metabuilder.service.errors import NotFound
    from metabuilder.service.runs import run_detail
    from metabuilder.store.db import transaction
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        try:
            detail = run_detail(session, args.run_id, tenant=None)
        except NotFound as err:
            raise CliError(f"{err} (no such run in {settings.database_url})") from None
        run = detail.run
        if args.json:
            from metabuilder.store.views import run_fields, step_fields

            print_json({**run_fields(run), "web_ui_url": web_ui_link(settings.ui_url, settings.temporal_namespace,
                                                                      run.id),
                        "steps": [step_fields(step) for step in detail.steps]})
            return EXIT_OK
        print(f"run {run.id}: {run.status}  tenant {run.tenant_id}  workflow {run.workflow_id}")
        print(f"  workspace: branch {run.branch} of {run.repo_url}")
        print(f"  base {run.base_commit[:12]}  head {run.head_commit[:12]}")
        if run.failed_step:
            print(f"  failed step: {run.failed_step}: {run.error}")
        for step in detail.steps:
            code = "" if step.exit_code is None else f" exit {step.exit_code}"
            took = "" if step.duration_seconds is None else f" {step.duration_seconds:.2f}s"
            print(f"  [{step.step_index}] {step.name:<16} attempt {step.attempt} {step.status}{code}{took}"
                  f"  log {step.log_path}")
    link = web_ui_link(settings.ui_url, settings.temporal_namespace, args.run_id)
    if link:
        print(f"  Web UI: {link}")
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service.runs import cancel
    from metabuilder.worker.runtime import connect, prepare_database

    await cancel(lambda: connect(settings, start_embedded=False), prepare_database(settings), args.run_id,
                 tenant=None)
    print(f"cancellation requested for run {args.run_id}")
    return EXIT_OK


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.worker.cli.demo import run_demo

    return await run_demo(settings)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
