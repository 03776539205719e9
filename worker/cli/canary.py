"""``metabuilder canary status|ramp|promote|rollback``: the canary between Worker Deployment
versions (docs/CANARY_AND_CHAOS.md). Every change is audited."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metabuilder.worker.cli.exits import EXIT_OK, EXIT_RUN_FAILED
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.domain.canary import Comparison, VersionStats
    from metabuilder.service.canary import CanaryView, Routing
    from metabuilder.worker.settings import Settings


def routing_json(r: Routing) -> dict[str, Any]:
    return {"deployment": r.deployment, "current": r.current, "ramping": r.ramping, "ramp_percent": r.ramp_percent,
            "versions": r.versions}


def comparison_json(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    from dataclasses import asdict

    return {"recommendation": c.recommendation.value, "reasons": c.reasons, "checks": c.checks,
            "success_p_value": c.success_p_value, "duration_p_value": c.duration_p_value,
            "cost_p_value": c.cost_p_value, "min_samples": c.min_samples, "alpha": c.alpha,
            "current": asdict(c.current), "candidate": asdict(c.candidate)}


def view_json(view: CanaryView) -> dict[str, Any]:
    return {"routing": routing_json(view.routing), "candidate": view.candidate,
            "samples_by_version": view.samples_by_version, "comparison": comparison_json(view.comparison)}


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _row(v: VersionStats, role: str) -> str:
    return (f"{role:<10} {v.version:<32} {v.runs:>5} {_num(v.success_rate, '.0%'):>8} "
            f"{_num(v.median_duration_seconds, '.3g'):>9} {_num(v.mean_attempts, '.3g'):>8} "
            f"{_num(v.mean_repairs, '.3g'):>8} {_num(v.mean_cost_usd, '.4g'):>9}")


def _print(view: CanaryView) -> None:
    r = view.routing
    print(f"deployment {r.deployment}: current {r.current or '(none: unversioned workers)'}"
          + (f", ramping {r.ramping} at {r.ramp_percent:g}%" if r.ramping else ", nothing ramps"))
    c = view.comparison
    if c is None:
        print("no candidate to compare" + (f" (samples: {view.samples_by_version})" if view.samples_by_version else ""))
        return
    print(f"{'':<10} {'version':<32} {'runs':>5} {'success':>8} {'median s':>9} {'attempts':>8} "
          f"{'repairs':>8} {'cost $':>9}")
    print(_row(c.current, "current"))
    print(_row(c.candidate, "candidate"))
    print(f"recommendation: {c.recommendation.value.upper()}")
    for reason in c.reasons:
        print(f"  - {reason}")


async def cmd_canary(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import canary as service
    from metabuilder.worker.runtime import connect, deployment_version, prepare_database

    actor = f"cli:{args.user}"
    deployment = args.deployment or settings.deployment.name
    canary = settings.v4.canary
    if args.min_samples is not None:
        from dataclasses import replace

        if args.min_samples < 1:
            raise ValueError(f"--min-samples {args.min_samples}: expected 1 or more")
        canary = replace(canary, min_samples=args.min_samples)
    percent = args.percent if args.percent is not None else canary.percent
    if args.action == "ramp":
        if not args.build_id:
            raise ValueError("canary ramp: name the candidate's build id")
        if not 0 < percent <= 100:
            raise ValueError(f"canary ramp: the share is {percent:g}%: pass --percent from 1 to 100 "
                             "(or set FEATURE_META_V4_CANARY_PERCENT)")
        own = deployment_version(settings)
        if not args.no_gate and (own is None or own.build_id != args.build_id):
            here = own.build_id if own else "unversioned (META_BUILDER_WORKER_VERSIONING is off)"
            raise ValueError(f"canary ramp: the decision-diff gate replays on this installation's code, which is "
                             f"{here}, not {args.build_id}: run it from the candidate's installation "
                             "(or pass --no-gate, audited)")
    sessions = prepare_database(settings)
    client = await connect(settings, start_embedded=False)
    if args.action == "status":
        view = await service.stats(client, sessions, canary, deployment, candidate=args.build_id)
        acted = None
        if args.act or canary.auto_act:
            acted = await service.act(client, sessions, view, "canary:auto" if not args.act else actor)
        if args.json:
            print_json({**view_json(view), "acted": routing_json(acted) if acted else None})
        else:
            _print(view)
            if acted is not None:
                print(f"acted on it (audited): current {acted.current}, "
                      + (f"ramping {acted.ramping} at {acted.ramp_percent:g}%" if acted.ramping else "nothing ramps"))
        return EXIT_OK
    if args.action == "ramp":
        assert args.build_id
        gate = None
        if not args.no_gate:
            gate = await _gate(client, sessions, settings, args)
            print(f"decision-diff gate on {args.build_id}: {gate.histories} histories replayed, {gate.bundles} "
                  f"bundles re-driven ({gate.decisions} decisions): "
                  + ("passed" if gate.passed else f"{len(gate.problems)} problem(s)"))
        try:
            state = await service.ramp(client, sessions, deployment, args.build_id, float(percent), actor, gate)
        except service.Conflict as err:
            if args.json:
                print_json({"ramped": False, "error": str(err), "problems": gate.problems if gate else []})
                return EXIT_RUN_FAILED
            raise
        print(f"ramping {state.ramping} at {state.ramp_percent:g}% of new runs; current {state.current} (audited)")
        return EXIT_OK
    if args.action == "promote":
        state = await service.promote(client, sessions, deployment, args.build_id, actor)
        print(f"promoted: every new run goes to {state.current} (audited)")
        return EXIT_OK
    state = await service.rollback(client, sessions, deployment, actor)
    print(f"rolled back: every new run goes to {state.current}; runs pinned to the candidate finish on it "
          "(keep its workers until they have) (audited)")
    return EXIT_OK


async def _gate(client: Any, sessions: Any, settings: Settings, args: argparse.Namespace) -> Any:
    from metabuilder.domain.runs import WORKFLOW_QUEUE, task_queue
    from metabuilder.service import canary as service
    from metabuilder.worker.cli.replay import replay_histories

    histories = service.history_files([Path(p) for p in args.histories or []])
    if args.recent:
        histories |= await service.recent_histories(
            client, task_queue(settings.task_queue_prefix, WORKFLOW_QUEUE), args.recent)
    return await service.decision_gate(sessions, histories, bundles=args.bundles, replay=replay_histories)


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("canary", help="canary between worker versions: status, ramp, promote, rollback",
                       description="The canary between Worker Deployment versions (docs/CANARY_AND_CHAOS.md): "
                                   "where new runs go, how the candidate compares, and moving the ramp (audited).")
    p.add_argument("action", choices=["status", "ramp", "promote", "rollback"])
    p.add_argument("build_id", nargs="?", default=None,
                   help="ramp/promote: the candidate's build id; status: compare this build (default: the ramping one)")
    p.add_argument("--percent", type=float, default=None,
                   help="ramp: share of new runs (default: FEATURE_META_V4_CANARY_PERCENT)")
    p.add_argument("--deployment", default=None, help="the Worker Deployment (default: META_BUILDER_DEPLOYMENT_NAME)")
    p.add_argument("--histories", action="append", default=None, metavar="PATH",
                   help="ramp: also replay the recorded histories in this file or directory (repeatable)")
    p.add_argument("--recent", type=int, default=20,
                   help="ramp: replay the histories of this many recently closed workflows (default 20)")
    p.add_argument("--bundles", type=int, default=20,
                   help="ramp: re-drive the replay bundles of this many recent runs (default 20)")
    p.add_argument("--no-gate", action="store_true", help="ramp without the decision-diff gate (audited as skipped)")
    p.add_argument("--min-samples", type=int, default=None,
                   help="status: the minimum sample size (default: META_V4_CANARY_MIN_SAMPLES)")
    p.add_argument("--act", action="store_true",
                   help="status: act on the recommendation (promote, or ramp to 0); "
                        "META_V4_CANARY_AUTO_ACT=true does too")
    p.add_argument("--user", default=getpass.getuser(), help="who, for the audit log (default: you)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_canary)
