"""``metabuilder replay``: a run's decisions taken again from its replay bundle, offline, and its
Temporal histories replayed on the current workflow code.

    metabuilder replay RUN_ID [--json]        decision diff + history replay (exit 1 on a difference)
    metabuilder replay export RUN_ID -o FILE  the bundle (and the run's histories) as one JSON file
    metabuilder replay import FILE [--as ID]  store an exported bundle here
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metabuilder.worker.cli.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUN_FAILED, CliError

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHistory

    from metabuilder.worker.settings import Settings

MAX_REPAIRS = 1000


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replay", help="re-drive a run's decisions from its replay bundle; export or import one",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="+", metavar="RUN_ID | export RUN_ID | import FILE")
    p.add_argument("-o", "--output", help="export: the file to write")
    p.add_argument("--as", dest="as_id", help="import: store the bundle under this run id")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-history", action="store_true", help="skip the Temporal history replay")
    p.set_defaults(fn=cmd_replay)


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    what = args.what
    if what[0] == "export":
        if len(what) != 2 or not args.output:
            raise CliError("usage: metabuilder replay export RUN_ID -o FILE", EXIT_BAD_INPUT)
        return await _export(settings, what[1], Path(args.output))
    if what[0] == "import":
        if len(what) != 2:
            raise CliError("usage: metabuilder replay import FILE [--as RUN_ID]", EXIT_BAD_INPUT)
        return _import(settings, Path(what[1]), args.as_id)
    if len(what) != 1:
        raise CliError("usage: metabuilder replay RUN_ID", EXIT_BAD_INPUT)
    return await _replay(settings, what[0], json_out=args.json, history=not args.no_history)


async def fetch_histories(client: Client, run_id: str) -> dict[str, WorkflowHistory]:
    """The run's workflow history and those of its repair children (empty: Temporal has none)."""
    from temporalio.service import RPCError, RPCStatusCode

    from metabuilder.domain.runs import workflow_id

    out: dict[str, WorkflowHistory] = {}
    for wf_id in [workflow_id(run_id), *(f"{workflow_id(run_id)}-repair-{n}" for n in range(1, MAX_REPAIRS))]:
        try:
            out[wf_id] = await client.get_workflow_handle(wf_id).fetch_history()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            break
    return out


async def replay_histories(histories: dict[str, WorkflowHistory]) -> dict[str, str | None]:
    """Workflow id -> None (replays on the current code) or why not."""
    from temporalio.worker import Replayer

    from metabuilder.worker.runtime import workflow_runner
    from metabuilder.workflows.build_run import BuildRunWorkflow
    from metabuilder.workflows.repair import RepairWorkflow

    replayer = Replayer(workflows=[BuildRunWorkflow, RepairWorkflow], workflow_runner=workflow_runner())
    out: dict[str, str | None] = {}
    for wf_id, history in histories.items():
        try:
            await replayer.replay_workflow(history)
            out[wf_id] = None
        except Exception as err:  # a non-determinism error, or a history the code cannot read
            out[wf_id] = f"{type(err).__name__}: {err}"
    return out


async def _replay(settings: Settings, run_id: str, *, json_out: bool, history: bool) -> int:
    from dataclasses import asdict

    from temporalio.client import WorkflowHistory

    from metabuilder.service.replay import redrive
    from metabuilder.worker.runtime import connect, prepare_database

    sessions = prepare_database(settings)
    report = redrive(sessions, run_id)
    results: dict[str, str | None] = {}
    source = "none"
    if history:
        histories = {h["workflow_id"]: WorkflowHistory.from_json(h["workflow_id"], h["json"])
                     for h in report.histories}
        source = "bundle" if histories else "temporal"
        if not histories:
            histories = await fetch_histories(await connect(settings), run_id)
        results = await replay_histories(histories)
    differences = [str(d) for d in report.differences]
    broken = {k: v for k, v in results.items() if v}
    if json_out:
        doc: dict[str, Any] = {"run_id": run_id, "entries": report.entries, "redriven": report.redriven,
                               "differences": [asdict(d) for d in report.differences],
                               "histories": {"source": source, "replayed": results}}
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(f"run {run_id}: {report.entries} bundle entries, {report.redriven} decision(s) taken again offline")
        if differences:
            print(f"decision diff ({len(differences)}):")
            for d in differences:
                print(f"  - {d}")
        else:
            print("decision diff: none (every decision is taken the same way on the current code)")
        if history:
            if not results:
                print("Temporal history: none found (the server no longer has the run; an imported bundle "
                      "carries its histories when they were exported)")
            for wf_id, why in results.items():
                print(f"  {'✗' if why else '✓'} {wf_id} replays" + (f": {why}" if why else ""))
    return EXIT_RUN_FAILED if differences or broken else EXIT_OK


async def _export(settings: Settings, run_id: str, output: Path) -> int:
    from metabuilder.service.replay import export_bundle
    from metabuilder.worker.runtime import connect, prepare_database

    sessions = prepare_database(settings)
    histories: dict[str, str] = {}
    try:
        client = await connect(settings)
        histories = {k: h.to_json() for k, h in (await fetch_histories(client, run_id)).items()}
    except Exception as err:  # the bundle is worth exporting without them; say so
        print(f"metabuilder: the run's Temporal histories are not included: {err}", file=sys.stderr)
    doc = export_bundle(sessions, run_id, histories)
    output.write_text(json.dumps(doc))
    print(f"exported run {run_id}: {len(doc['entries'])} entries, {len(doc['blobs'])} blobs, "
          f"{len(histories)} histories -> {output}")
    return EXIT_OK


def _import(settings: Settings, path: Path, as_id: str | None) -> int:
    from metabuilder.service.replay import import_bundle
    from metabuilder.worker.runtime import prepare_database

    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"{path}: file not found") from None
    except ValueError as err:
        raise CliError(f"{path}: not JSON: {err}") from None
    run_id, new = import_bundle(prepare_database(settings), doc, run_id=as_id)
    print(f"imported {new} new entries for run {run_id}; replay it with `metabuilder replay {run_id}`")
    return EXIT_OK
