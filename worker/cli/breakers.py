"""``metabuilder breakers``: list the circuit breakers, and open, close or reset one."""

from __future__ import annotations

import argparse
import getpass
import time
from typing import TYPE_CHECKING

from metabuilder.worker.cli.json_out import print_json

if TYPE_CHECKING:
    from metabuilder.store.breakers import BreakerRow
    from metabuilder.worker.settings import Settings


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def _row_json(r: BreakerRow) -> dict[str, object]:
    b = r.breaker
    return {"tenant": b.key.tenant, "failure_class": str(b.key.failure_class), "dependency": b.key.dependency,
            "state": str(b.state), "failures_in_window": len(b.failures), "trips": b.trips, "forced": b.forced,
            "opened_at": b.opened_at, "cooldown_seconds": b.cooldown_seconds, "next_probe_at": b.next_probe_at,
            "probe_run_id": b.probe_run, "last_reason": r.last_reason,
            "waiting_runs": [{"run_id": run, "step": step, "since": since} for run, step, since in r.waiting]}


def cmd_breakers(args: argparse.Namespace, settings: Settings) -> int:
    from metabuilder.domain.breakers import BreakerState, Override
    from metabuilder.service import breakers as service
    from metabuilder.store import breakers as store
    from metabuilder.worker.runtime import prepare_database

    sessions = prepare_database(settings)
    if args.action != "list":
        if not args.failure_class or not args.dependency:
            raise ValueError(f"breakers {args.action} needs a FAILURE_CLASS and a DEPENDENCY "
                             "(e.g. metabuilder breakers close TRANSIENT pypi.org:443)")
        key = service.breaker_key(args.tenant or "default", args.failure_class, args.dependency,
                                  settings.breakers.policies)
        after = service.force(sessions, key, Override(args.action), actor=f"cli:{args.user}",
                              policies=settings.breakers.policies)
        print(f"breaker {key} is {after.state}" + (" (forced: no probes until closed or reset)"
                                                   if after.forced else ""))
        return 0
    rows = store.list_breakers(sessions, args.tenant)
    if args.json:
        print_json([_row_json(r) for r in rows])
        return 0
    if not rows:
        print("no circuit breakers yet" + (f" for tenant {args.tenant!r}" if args.tenant else ""))
        return 0
    now = time.time()
    for r in rows:
        b = r.breaker
        line = f"{b.key.tenant:<16} {b.key.failure_class:<11} {b.key.dependency:<32} {b.state:<9}"
        if b.state is BreakerState.OPEN and b.opened_at:
            line += f" open {_ago(now - b.opened_at)}"
            line += " (forced)" if b.forced else (
                f", probe in {_ago(b.next_probe_at - now)}" if b.next_probe_at else "")
        elif b.state is BreakerState.HALF_OPEN:
            line += f" probe: run {b.probe_run}"
        else:
            line += f" {len(b.failures)} recent failure(s)"
        line += f", trips {b.trips}"
        if r.waiting:
            line += f", {len(r.waiting)} run(s) waiting"
        print(line)
        if r.last_reason:
            print(f"{'':16} {r.last_reason}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("breakers", help="list circuit breakers, or open, close or reset one")
    p.add_argument("action", nargs="?", choices=["list", "open", "close", "reset"], default="list")
    p.add_argument("failure_class", nargs="?", help="TRANSIENT, RATE_LIMIT or INFRA (for open/close/reset)")
    p.add_argument("dependency", nargs="?", help="the host:port or service, as listed")
    p.add_argument("--tenant", default=None, help="one tenant (default: all for list, 'default' otherwise)")
    p.add_argument("--user", default=getpass.getuser(), help="who overrides, for the audit log (default: you)")
    p.add_argument("--json", action="store_true", help="list as JSON")
    p.set_defaults(fn=cmd_breakers)
