"""``metabuilder chaos``: the statistics, turning a scope on or off (audited), and the conformance."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import TYPE_CHECKING

from metabuilder.worker.cli.exits import EXIT_OK, EXIT_RUN_FAILED
from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.service.chaos import StatsView
    from metabuilder.worker.settings import Settings


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def stats_json(view: StatsView) -> dict[str, object]:
    from dataclasses import asdict

    return {"since": view.since.isoformat(), "retention_days": view.retention_days,
            "total": asdict(view.stats.total),
            "by_type": {str(k): asdict(v) for k, v in view.stats.by_type.items()},
            "scopes": [{"tenant": s.tenant, "run_id": s.run_id or None, "probability": s.probability,
                        "weights": {str(k): v for k, v in s.weights.items() if v > 0}, "seed": s.seed,
                        "steps": list(s.steps), "max_attempt": s.max_attempt, "expires_at": s.expires_at}
                       for s in view.scopes]}


def _print_stats(view: StatsView, settings: Settings) -> None:
    from metabuilder.domain.chaos import format_weights

    print(f"chaos since {view.since:%Y-%m-%d %H:%M} UTC (retention {view.retention_days:g} days); "
          f"workers started with this environment {'may' if settings.chaos.enabled else 'may NOT'} inject "
          f"(META_V4_CHAOS_ENABLED={'true' if settings.chaos.enabled else 'false'})")
    if view.scopes:
        for s in view.scopes:
            where = f"run {s.run_id}" if s.run_id else "every run"
            print(f"  on: tenant {s.tenant!r}, {where}: probability {s.probability:g}, {format_weights(s.weights)}"
                  + (f", steps {', '.join(s.steps)}" if s.steps else "")
                  + (f", attempts <= {s.max_attempt}" if s.max_attempt else ""))
    else:
        print("  no chaos scope is on")
    print(f"{'type':<17} {'injected':>8} {'recovered':>9} {'unrecov.':>8} {'pending':>7} {'rate':>6} "
          f"{'mean s':>7} {'p95 s':>7}")
    rows = [(str(k), v) for k, v in view.stats.by_type.items() if v.injections] + [("total", view.stats.total)]
    for name, t in rows:
        print(f"{name:<17} {t.injections:>8} {t.recovered:>9} {t.unrecovered:>8} {t.pending:>7} "
              f"{_num(t.recovery_rate):>6} {_num(t.mean_recovery_seconds):>7} {_num(t.p95_recovery_seconds):>7}")


async def cmd_chaos(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.domain.chaos import parse_weights
    from metabuilder.domain.plans import parse_duration
    from metabuilder.domain.taxonomy import FailureType
    from metabuilder.service import chaos as service
    from metabuilder.worker.runtime import prepare_database
    from metabuilder.worker.settings import Environment

    actor = f"cli:{args.user}"
    if args.action == "conformance":
        from metabuilder.worker.cli import conformance

        classes = None
        if args.only:
            try:
                classes = [FailureType(c.strip().upper()) for c in args.only.split(",") if c.strip()]
            except ValueError:
                raise ValueError(f"--only {args.only!r}: expected some of "
                                 f"{', '.join(p.failure_class for p in conformance.PROBES)}") from None
        report = await conformance.run_conformance(settings, classes=classes, force=args.force)
        if args.json == "-":
            print_json(report.to_json())
        elif args.json:
            conformance.write_json(report, Path(args.json))
        return EXIT_OK if report.holds else EXIT_RUN_FAILED
    sessions = prepare_database(settings)
    if args.action == "stats":
        view = service.stats(sessions, settings.chaos, tenant=args.tenant, run_id=args.run)
        if args.json:
            print_json(stats_json(view))
        else:
            _print_stats(view, settings)
        return EXIT_OK
    tenant = args.tenant or "default"
    if args.action == "disable":
        service.disable(sessions, tenant, actor, run_id=args.run or "")
        print(f"chaos off for {'run ' + args.run if args.run else 'tenant ' + repr(tenant)} (audited)")
        return EXIT_OK
    request = service.ScopeRequest(
        tenant=tenant, run_id=args.run or "", probability=args.probability,
        weights=parse_weights(args.weights, "--weights") if args.weights else None, seed=args.seed,
        steps=tuple(s.strip() for s in (args.steps or "").split(",") if s.strip()), max_attempt=args.max_attempt,
        for_seconds=parse_duration(args.duration) if args.duration else None)
    enabled = service.enable(sessions, settings.chaos, request, actor,
                             production=settings.environment is Environment.PRODUCTION, force=args.force)
    s = enabled.scope
    from metabuilder.domain.chaos import format_weights

    print(f"chaos {'changed' if enabled.replaced else 'on'} for "
          f"{'run ' + s.run_id if s.run_id else 'tenant ' + repr(s.tenant)}: probability {s.probability:g}, "
          f"{format_weights(s.weights)}, seed {s.seed}"
          + (f", until {args.duration} from now" if args.duration else ", until disabled") + " (audited)")
    if not settings.chaos.enabled:
        print("note: workers inject only where META_V4_CHAOS_ENABLED=true (it is not set here)")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("chaos", help="chaos: statistics, turn a scope on or off, or run the conformance",
                       description="Chaos fault injection (docs/CANARY_AND_CHAOS.md). Workers inject only with "
                                   "META_V4_CHAOS_ENABLED=true, and only into runs of a scope turned on here.")
    p.add_argument("action", choices=["stats", "enable", "disable", "conformance"])
    p.add_argument("--tenant", default=None, help="the tenant (default: all for stats, 'default' otherwise)")
    p.add_argument("--run", default=None, help="one run instead of the tenant's runs")
    p.add_argument("--probability", type=float, default=None,
                   help="share of step attempts injected (default: META_V4_CHAOS_INJECTION_PROBABILITY)")
    p.add_argument("--weights", default=None,
                   help="type=weight pairs, e.g. transient_error=3,latency=1 (default: META_V4_CHAOS_WEIGHTS)")
    p.add_argument("--seed", type=int, default=None, help="the decisions' seed (default: META_V4_CHAOS_SEED)")
    p.add_argument("--steps", default=None, help="only these step names, comma-separated")
    p.add_argument("--max-attempt", type=int, default=None, help="only attempts numbered up to this")
    p.add_argument("--for", dest="duration", default=None, help="switch itself off after this long (e.g. 30m)")
    p.add_argument("--force", action="store_true", help="allow it in the production environment")
    p.add_argument("--only", default=None, help="conformance: only these classes, comma-separated")
    p.add_argument("--user", default=getpass.getuser(), help="who, for the audit log (default: you)")
    p.add_argument("--json", nargs="?", const="-", default=None,
                   help="stats as JSON; conformance: write the rows and observations to this file")
    p.set_defaults(fn=cmd_chaos)
