"""``metabuilder run|status|cancel|settings|demo``: submit a plan and follow its run, read a run
back, cancel it, and a tenant's auto-fix settings."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from metabuilder.domain.policy import ENV_VARS
from metabuilder.domain.pools import PriorityClass, parse_priority
from metabuilder.domain.sla import SlaClass, parse_sla
from metabuilder.worker.cli.exits import EXIT_OK, EXIT_RUN_FAILED, CliError
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from typing import TextIO

    from sqlalchemy.orm import Session, sessionmaker
    from temporalio.client import Client

    from metabuilder.domain.privacy import Privacy
    from metabuilder.service.runs import SubmitOptions, Submitted
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
    from metabuilder.domain.runs import RunStatus, new_run_id, web_ui_link
    from metabuilder.service.audit import audited
    from metabuilder.service.budgets import tenant_concurrent_runs
    from metabuilder.service.runs import SubmitOptions, resolve_autofix, submit
    from metabuilder.service.scheduling import resolve_v4
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.cli.follow import follow, print_summary
    from metabuilder.worker.runtime import POOLS, build_workers, connect, prepare_database, running_workers

    plan_path = Path(args.plan)
    plan_text = read_plan_file(plan_path)  # bounded, and a binary file is named as such
    parse_plan(plan_text, source=str(plan_path))  # reject a bad plan before touching anything
    sessions = prepare_database(settings)
    run_privacy = _run_privacy(args, settings, sessions)  # refused before anything starts
    client = await connect(settings)
    local = args.with_worker or (not args.detach and await _needs_local_workers(client, settings))
    overrides = _key_values(args.set)
    if args.autofix is not None:
        overrides["enabled"] = args.autofix
    effective = resolve_autofix(settings.autofix, sessions, args.tenant, overrides)
    v4 = resolve_v4(settings.v4, sessions, args.tenant, run_enabled=args.v4, priority=args.priority, sla=args.sla)
    opts = SubmitOptions.of(settings, tenant=args.tenant, autofix=effective, v4=v4)
    opts = replace(opts, tenant_max_active_runs=tenant_concurrent_runs(sessions, args.tenant,
                                                                       opts.tenant_max_active_runs))
    story = sys.stderr if args.detach else sys.stdout  # detached, stdout carries the run id alone
    if args.idempotency_key:
        once = await _submit_once(args, client, sessions, plan_text, opts, story, run_privacy)
        if isinstance(once, str):
            return await _follow_replayed(args, client, settings, sessions, once, local)
        submitted = once
    else:
        run_id = args.run_id or (new_run_id() if run_privacy is not None else None)
        if run_id is not None and run_privacy is not None:
            _keep_privacy(sessions, run_id, args.tenant, run_privacy)
        submitted = await submit(client, plan_text, str(plan_path), Path(args.workspace), opts, run_id=run_id)
    await audited(sessions, "run.started", tenant=args.tenant, actor=cli_actor(), target=f"run:{submitted.run_id}",
                  run_id=submitted.run_id,
                  after={"plan": submitted.plan.name, "source": str(plan_path), "workspace": submitted.workspace.source,
                         "base_commit": submitted.workspace.base_commit, "overrides": overrides,
                         **({"privacy": {"mode": args.privacy_mode}} if run_privacy is not None else {})})
    link = web_ui_link(settings.ui_url, settings.temporal_namespace, submitted.run_id)
    print(f"run {submitted.run_id} started: plan {submitted.plan.name!r}, {len(submitted.plan.steps)} steps, "
          f"workspace {submitted.workspace.source} at {submitted.workspace.base_commit[:12]}", file=story)
    a = effective.settings
    print(f"  auto-fix: {'on' if a.enabled else 'off'}" + (
        f" (at most {a.max_total_attempts} attempts per run, {a.max_per_step_attempts} per step, "
        f"backoff cap {a.backoff_cap_seconds:g}s)" if a.enabled else ""), file=story)
    if v4.flag.enabled:
        sched = v4.scheduling(args.tenant, submitted.plan)
        assert sched is not None
        print(f"  v4: on (from {v4.flag.source}), priority {sched.priority}"
              f"{' for every step' if sched.override else ''}, fairness key {sched.fairness_key!r} "
              f"weight {sched.fairness_weight:g}", file=story)
        if (sla := v4.run_sla(submitted.plan)) is not None:
            print(f"  SLA: {sla.sla_class} (from {sla.source}): time budget {sla.time_budget_seconds:g}s, model tier "
                  f"{sla.model_tier}, repair depth {sla.repair_depth}, {sla.candidates} candidate(s) per LLM patch",
                  file=story)
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


def _run_privacy(args: argparse.Namespace, settings: Settings, sessions: sessionmaker[Session]) -> Privacy | None:
    """``--privacy-mode``, checked against the tenant's (a run may only tighten it)."""
    if args.privacy_mode is None:
        return None
    from metabuilder.service import privacy
    from metabuilder.store.db import transaction

    with transaction(sessions) as session:
        return privacy.run_privacy(session, settings.privacy, args.tenant, {"mode": args.privacy_mode},
                                   where="--privacy-mode", mode_field="--privacy-mode")


def _keep_privacy(sessions: sessionmaker[Session], run_id: str, tenant: str, run_privacy: Privacy) -> None:
    from metabuilder.service import privacy
    from metabuilder.store.db import transaction

    with transaction(sessions) as session:
        privacy.keep_run_privacy(session, run_id, tenant, run_privacy)


async def _submit_once(args: argparse.Namespace, client: Client, sessions: sessionmaker[Session], plan_text: str,
                       opts: SubmitOptions, story: TextIO, run_privacy: Privacy | None = None) -> Submitted | str:
    """Submit under ``--idempotency-key``: the run this started, or the id of the run the key's
    first submission started."""
    from metabuilder.service import idempotency
    from metabuilder.service.runs import submit

    if args.run_id:
        raise CliError("--run-id and --idempotency-key: give one of them (the key chooses the run id)")
    workspace = str(Path(args.workspace).resolve())
    request = {"plan": plan_text, "workspace": workspace, "tenant": args.tenant, "set": sorted(args.set or []),
               "autofix": args.autofix, "priority": args.priority, "v4": args.v4, "privacy": args.privacy_mode,
               **({"sla": args.sla} if args.sla else {})}

    started: list[Submitted] = []

    async def start(run_id: str) -> dict[str, object]:
        if run_privacy is not None:
            await asyncio.to_thread(_keep_privacy, sessions, run_id, args.tenant, run_privacy)
        started.append(await submit(client, plan_text, args.plan, Path(args.workspace), opts, run_id=run_id))
        return {"run_id": run_id}

    async def adopt(run_id: str) -> dict[str, object] | None:
        return {"run_id": run_id} if await idempotency.run_started(client, run_id) else None

    answer = await idempotency.once(sessions, args.tenant, args.idempotency_key, idempotency.body_hash(request),
                                    start, adopt=adopt)
    if started:
        return started[0]
    run_id = str(answer.response["run_id"])
    print(f"run {run_id} was started by an earlier `metabuilder run` with --idempotency-key "
          f"{args.idempotency_key!r}; no new run", file=story)
    return run_id


async def _follow_replayed(args: argparse.Namespace, client: Client, settings: Settings,
                           sessions: sessionmaker[Session], run_id: str, local: bool) -> int:
    from metabuilder.domain.payloads import RunView
    from metabuilder.domain.runs import RunStatus, web_ui_link, workflow_id
    from metabuilder.worker.cli.follow import follow, print_summary
    from metabuilder.worker.runtime import POOLS, build_workers, running_workers

    link = web_ui_link(settings.ui_url, settings.temporal_namespace, run_id)
    if args.detach:
        if args.json:
            print_json({"run_id": run_id, "workflow_id": workflow_id(run_id), "web_ui_url": link})
        else:
            print(run_id)
        return EXIT_OK
    handle = client.get_workflow_handle(workflow_id(run_id), result_type=RunView)
    if local:
        async with running_workers(build_workers(client, settings, sessions, POOLS)):
            view = await follow(handle)
    else:
        view = await follow(handle)
    print_summary(view, repo=settings.shared_repo, ui_link=link)
    return EXIT_OK if view.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED


def _priority(text: str) -> PriorityClass:
    try:
        return parse_priority(text, "--priority")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _sla(text: str) -> SlaClass:
    try:
        return parse_sla(text, "--sla")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    from metabuilder.service.scheduling import change_tenant_v4, tenant_v4
    from metabuilder.service.settings import change_tenant_settings, tenant_settings
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    with transaction(sessions) as session:
        if args.v4 is not None:
            change_tenant_v4(session, settings.v4, args.tenant, {} if args.v4 == "platform" else {
                "enabled": args.v4 == "on"}, merge=False, where="--v4", tenant=None, actor=cli_actor())
        v4 = tenant_v4(session, settings.v4, args.tenant, tenant=None)
        if args.reset or args.set:
            changes = {} if args.reset else _key_values(args.set)
            current = change_tenant_settings(session, settings.autofix, args.tenant, changes, merge=not args.reset,
                                             where="--set", tenant=None, actor=cli_actor())
        else:
            current = tenant_settings(session, settings.autofix, args.tenant, tenant=None)
    effective = current.effective
    if args.json:
        print_json({"tenant": args.tenant, "environment": settings.environment.value,
                    "settings": {key: getattr(effective.settings, key) for key in ENV_VARS},
                    "sources": dict(effective.sources), "variables": dict(ENV_VARS),
                    "v4": {"enabled": v4["enabled"], "source": v4["source"], "variable": "FEATURE_META_V4_ENABLED"}})
        return EXIT_OK
    print(f"auto-fix settings of tenant {args.tenant!r} (environment {settings.environment.value}):")
    for key, var in ENV_VARS.items():
        value = getattr(effective.settings, key)
        shown = ("true" if value else "false") if isinstance(value, bool) else f"{value:g}"
        print(f"  {key:<22} {shown:<6} from {effective.sources[key]:<8} ({var})")
    print(f"  {'v4 (priority, fairness)':<22} {'true' if v4['enabled'] else 'false':<6} from {v4['source']:<8} "
          "(FEATURE_META_V4_ENABLED)")
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
            from dataclasses import asdict

            from metabuilder.service.confidence import confidence_of
            from metabuilder.store.views import run_fields, step_fields

            confidence = confidence_of(session, run)
            print_json({**run_fields(run), "web_ui_url": web_ui_link(settings.ui_url, settings.temporal_namespace,
                                                                      run.id),
                        "steps": [step_fields(step) for step in detail.steps],
                        "confidence": asdict(confidence) if confidence else None})
            return EXIT_OK
        print(f"run {run.id}: {run.status}  tenant {run.tenant_id}  workflow {run.workflow_id}")
        print(f"  workspace: branch {run.branch} of {run.repo_url}")
        print(f"  base {run.base_commit[:12]}  head {run.head_commit[:12]}")
        if run.failed_step:
            print(f"  failed step: {run.failed_step}: {run.error}")
        from metabuilder.service.confidence import confidence_of

        if (confidence := confidence_of(session, run)) is not None:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in confidence.parts.items())
            print(f"  confidence: {confidence.score:.2f} ({confidence.level}; weakest repair: {confidence.step}; "
                  f"{parts})")
            for risk in confidence.risks:
                print(f"    risk: {risk.name}: {risk.detail}")
        for step in detail.steps:
            code = "" if step.exit_code is None else f" exit {step.exit_code}"
            took = "" if step.duration_seconds is None else f" {step.duration_seconds:.2f}s"
            print(f"  [{step.step_index}] {step.name:<16} attempt {step.attempt} {step.status}{code}{took}"
                  f"  log {step.log_path}")
    link = web_ui_link(settings.ui_url, settings.temporal_namespace, args.run_id)
    if link:
        print(f"  Web UI: {link}")
    return EXIT_OK


def _run_tenant(sessions, run_id: str) -> str:  # type: ignore[no-untyped-def]
    """The run's tenant by the projection (``default`` for a run it does not show yet)."""
    from metabuilder.store import repository
    from metabuilder.store.db import transaction

    with transaction(sessions) as session:
        run = repository.get_run(session, run_id)
        return run.tenant_id if run is not None else "default"


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from metabuilder.service.audit import audited
    from metabuilder.service.runs import cancel
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import connect, prepare_database

    sessions = prepare_database(settings)
    asked = await cancel(lambda: connect(settings, start_embedded=False), sessions, args.run_id, tenant=None)
    tenant = await asyncio.to_thread(_run_tenant, sessions, args.run_id)
    await audited(sessions, "run.cancel_requested", tenant=tenant, actor=cli_actor(), target=f"run:{args.run_id}",
                  run_id=args.run_id, before={"status": asked.status}, after={"status": "cancelling"})
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
    p.add_argument("--priority", type=_priority, metavar="high|normal|low",
                   help="the run's priority in its pools' queues, over the plan's and steps' own (with v4 on)")
    p.add_argument("--sla", type=_sla, metavar="fast|normal|thorough",
                   help="the run's SLA class, over the plan's `sla:` (priority, time budget, model tier, "
                        "repair depth; with v4 on; META_V4_SLA_CLASSES)")
    p.add_argument("--idempotency-key", metavar="KEY",
                   help="submit at most once: a repeat with the same KEY (and the same arguments) follows "
                        "the first run instead of starting another; other arguments under the KEY are refused")
    p.add_argument("--v4", action=argparse.BooleanOptionalAction, default=None,
                   help="v4 scheduling (priority, fairness) on or off for this run "
                        "(default: tenant, then FEATURE_META_V4_ENABLED)")
    p.add_argument("--privacy-mode", choices=["none", "local", "redacted", "open"],
                   help="this run's privacy mode: only as strict as the tenant's or stricter")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("settings", help="show or change a tenant's auto-fix settings")
    p.add_argument("--tenant", default="default")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override ({', '.join(ENV_VARS)})")
    p.add_argument("--reset", action="store_true", help="drop the tenant's overrides (platform defaults apply)")
    p.add_argument("--v4", choices=["on", "off", "platform"],
                   help="v4 scheduling (priority, fairness) for the tenant's runs; platform: FEATURE_META_V4_ENABLED")
    p.add_argument("--json", action="store_true", help="the settings and their sources as JSON")
    p.set_defaults(fn=cmd_settings)

    p = sub.add_parser("status", help="show a run from the database projection")
    p.add_argument("run_id")
    p.add_argument("--json", action="store_true", help="the run and its step attempts as JSON (the API's fields)")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("cancel", help="cancel a run (the running step's process is killed)")
    p.add_argument("run_id")
    p.set_defaults(fn=cmd_cancel)
