"""``metabuilder budget show|set``: a run's or a tenant's budget (limit, reserved and spent per
dimension), and setting the tenant's or the run's level (platform -> tenant -> run)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.worker.settings import Settings


def _values(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (``run.time_seconds=600`` for a tenant's run defaults; ``none``: no limit)."""
    from metabuilder.service.errors import BadRequest

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise BadRequest(f"{pair!r}: expected key=value, e.g. cost_usd_per_day=5")
        value: float | int | None
        if raw.strip().lower() in ("none", "null", ""):
            value = None
        else:
            try:
                value = int(raw) if raw.strip().isdigit() else float(raw)
            except ValueError:
                raise BadRequest(f"{pair!r}: {raw!r} is not a number (none: no limit)") from None
        head, dot, rest = key.strip().partition(".")
        if dot:
            out.setdefault(head, {})[rest] = value
        else:
            out[head] = value
    return out


def cmd_budget(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.service import budgets as service
    from metabuilder.service.errors import BadRequest
    from metabuilder.store.db import transaction
    from metabuilder.worker.cli.audit import cli_actor
    from metabuilder.worker.runtime import prepare_database

    if (args.run is None) == (args.tenant is None):
        raise BadRequest("give exactly one of --run RUN_ID and --tenant TENANT")
    sessions = prepare_database(settings)
    platform = settings.budgets
    with transaction(sessions) as session:
        if args.action == "set":
            changes = _values(args.values)
            if args.run is not None:
                shown = service.change_run_budget(session, platform, args.run, changes, merge=not args.reset,
                                                  where="budget set", tenant=None, actor=cli_actor())
            else:
                shown = service.change_tenant_budget(session, platform, args.tenant, changes, merge=not args.reset,
                                                     where="budget set", tenant=None, actor=cli_actor())
        elif args.values:
            raise BadRequest("budget show takes no --set (it is for budget set)")
        elif args.run is not None:
            shown = service.run_budget(session, platform, args.run, tenant=None)
        else:
            shown = service.tenant_budget(session, platform, args.tenant, tenant=None)
    if args.json:
        print_json(shown)
        return 0
    _print(shown)
    return 0


def _limit(value: float | None) -> str:
    return "no limit" if value is None else f"{value:g}"


def _print(shown: dict[str, Any]) -> None:
    def table(dims: dict[str, dict[str, Any]]) -> None:
        for name, d in dims.items():
            source = f"  [{d['source']}]" if d.get("source") else ""
            print(f"  {name:<14} limit {_limit(d['limit']):>10}  reserved {d['reserved']:>12g}  "
                  f"spent {d['spent']:>12g}{source}")

    records = shown["records"]
    if "run_id" in shown:
        print(f"budget of run {shown['run_id']} (tenant {shown['tenant']!r}):")
        table(shown["dimensions"])
    else:
        print(f"budget of tenant {shown['tenant']!r} (concurrent runs: "
              f"{shown['concurrent_runs'] if shown['concurrent_runs'] is not None else 'the platform limit'}):")
        for period, dims in shown["periods"].items():
            print(f" {period}:")
            table(dims)
        print("  its runs' defaults: " + ", ".join(f"{k} {_limit(v)}" for k, v in shown["run_defaults"].items()))
    print(f"  metered: {records['llm_calls']} LLM calls ({records['tokens_in']} tokens in, {records['tokens_out']} "
          f"out), {records['step_attempts']} step attempts ({records['cpu_seconds']:.3f} CPU s, "
          f"{records['wall_seconds']:.3f} s), ${records['cost_usd']:.6f}; {shown['open_reservations']} open "
          "reservation(s)")


def spend_lines(shown: dict[str, Any], models: list[dict[str, Any]], llm_model: str | None) -> list[str]:
    """Two lines on a run's budget and its model choice, for a run's story (the demo)."""
    r, dims = shown["records"], shown["dimensions"]
    limits = ", ".join(f"{name} {_limit(d['limit'])} ({d['source']})" for name, d in dims.items()
                       if d["limit"] is not None) or "no limit set (metered only)"
    lines = [f"budget: {r['step_attempts']} step attempt(s), {r['cpu_seconds']:.2f} CPU s, {r['wall_seconds']:.2f} s; "
             f"{r['llm_calls']} LLM call(s), {r['tokens_in']} tokens in, {r['tokens_out']} out; "
             f"${r['cost_usd']:.4f}; limits: {limits}"]
    if models:
        lines += [f"model: {m.get('model') or 'none'}, {m.get('reason', '')}" for m in models]
    else:
        lines.append(f"model: {llm_model} (the platform's; no SLA class chose one)" if llm_model
                     else "model: none (no LLM configured, so nothing was asked of one)")
    return lines


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("budget", help="show or set a run's or a tenant's budget (limit, reserved, spent)")
    p.add_argument("action", choices=["show", "set"])
    p.add_argument("--set", dest="values", action="append", default=[], metavar="KEY=VALUE",
                   help="with set (repeatable): a run's time_seconds, cost_usd, attempts; a tenant's cost_usd_per_day, "
                        "cost_usd_per_month, tokens_per_day, tokens_per_month, concurrent_runs, "
                        "run.<key> (its runs' defaults); none: no limit at this level")
    p.add_argument("--run", metavar="RUN_ID")
    p.add_argument("--tenant")
    p.add_argument("--reset", action="store_true", help="with set: drop the level's own values first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_budget)
