"""``metabuilder eval``: the golden tasks on the real engine, with the embedded dev server and
in-process workers (as ``metabuilder demo`` runs), and their figures.

Without ``META_BUILDER_LLM_URL`` the LLM fixer is a local endpoint answering from the tasks'
recorded responses, so the evaluation is deterministic and offline; with it, the same command
measures the configured model.

Exits 0 when every task ran and no unsafe patch was applied (tasks decided differently than
expected are figures of the report, listed at its end); 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from metabuilder.worker.cli.exits import EXIT_OK, EXIT_RUN_FAILED, CliError

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings

def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("eval", help="run the golden tasks on the real engine and report how it decided",
                       description=__doc__)
    p.add_argument("--tasks", help="comma-separated task names (default: all; see --list)")
    p.add_argument("--json", action="store_true", help="print the figures and every task's result as JSON")
    p.add_argument("--list", action="store_true", help="list the tasks and what each expects, then stop")
    p.add_argument("--concurrency", type=int, default=4, help="runs at once on the one worker set (default 4)")
    p.set_defaults(fn=cmd_eval)


async def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: `metabuilder --help` and `classify` load no server-side libraries.
    import json
    import time
    from dataclasses import replace

    from metabuilder.adapters.llm import LlmSettings
    from metabuilder.domain.golden import GoldenError, summarize
    from metabuilder.evaluation import report
    from metabuilder.evaluation.recorded_llm import MODEL, RecordedModel, recorded_llm
    from metabuilder.evaluation.runner import EvalContext, run_tasks
    from metabuilder.evaluation.services import fixture_service
    from metabuilder.evaluation.tasks import load_tasks
    from metabuilder.service.runs import SubmitOptions, resolve_autofix
    from metabuilder.worker.runtime import POOLS, build_workers, connect, prepare_database, running_workers

    try:
        names = [n.strip() for n in (args.tasks or "").split(",") if n.strip()] or None
        tasks = load_tasks(names)
    except GoldenError as err:
        raise CliError(str(err)) from None
    if args.list:
        for t in tasks:
            e = t.expected
            print(f"{t.name:<28} {e.language:<11} {e.step}: {e.failure_class} -> {e.strategy} -> {e.status}")
        return EXIT_OK
    model = RecordedModel([r for t in tasks for r in t.responses])
    sessions = prepare_database(settings)
    client = await connect(settings)
    autofix = resolve_autofix(settings.autofix, sessions, "default", {"enabled": True})
    # Many runs share one process here: a busy event loop must not read as a lost worker.
    opts = SubmitOptions.of(settings, autofix=autofix,
                            heartbeat_timeout_seconds=max(settings.heartbeat_timeout_seconds, 30.0))
    workdir = settings.home / "eval" / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with recorded_llm(model) as url, fixture_service() as service:
        llm = settings.llm or LlmSettings(url=url, model=MODEL)
        worker_settings = replace(settings, llm=llm)
        if not args.json:
            print(f"Meta-Builder eval · {len(tasks)} golden task(s), {args.concurrency} at a time · "
                  f"LLM {'recorded responses' if settings.llm is None else llm.model + ' at ' + llm.url}")
        ctx = EvalContext(client, sessions, opts, service, workdir,
                          on_done=None if args.json else lambda s: print(report.task_line(s), flush=True))
        async with running_workers(build_workers(client, worker_settings, sessions, POOLS)):
            scores = await run_tasks(ctx, tasks, args.concurrency)
    summary = summarize(scores)
    wall = time.monotonic() - started
    name = "recorded" if settings.llm is None else settings.llm.model
    if args.json:
        print(json.dumps(report.as_json(summary, scores, model=name, wall_seconds=wall), indent=2, default=str))
    else:
        print(report.text(summary, scores, model=name))
        print(f"Wall time: {wall:.0f}s")
    # A task the engine decided differently is a figure of the evaluation; an unsafe patch that was
    # applied, or a task that could not be run at all, fails it.
    errors = [s for s in scores if s.observed.error]
    return EXIT_RUN_FAILED if summary.unsafe_applied or errors else EXIT_OK
