"""The API under open-loop load, on SQLite and PostgreSQL.

`metabuilder api` runs in its own process over a database seeded with ``--runs`` runs (3
steps each); ``bench/load_client.py`` sends the load from another process, half
``GET /api/meta/v3/runs?limit=50`` and half ``GET /api/meta/v3/runs/{id}``, all on loopback.
Phases, each bounded:

0. light: 50 requests/s for 4 s, well below capacity: p99 and the server's CPU time per request
   (user + system, from /proc), a figure that depends less on what else the machine runs;
1. steady: ``--rate`` requests/s for ``--seconds`` (goal: p99 under 50 ms, no 5xx);
2. overload: ``--overload`` requests/s for 5 s, past saturation, with ``/healthz`` probed every
   0.1 s (goal: excess refused fast with 503 and Retry-After, healthz answering), then 20
   requests/s for 3 s: how long after the overload stops p99 (per 0.25 s) is back to normal,
   that is under twice the light phase's p99 (and at least 50 ms);
3. SIGTERM during load at ``--rate``: how long the process takes to exit.

    python bench/bench_api_load.py [--db sqlite,postgres] [--src DIR] [--label after]

``--src`` serves the API from another checkout (e.g. ``git worktree add /tmp/base main``) with
this checkout's load generator and seeding, for before/after figures in one session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from metabuilder.domain.access import Role  # noqa: E402
from metabuilder.domain.payloads import RunRecord  # noqa: E402
from metabuilder.domain.plans import parse_plan  # noqa: E402
from metabuilder.domain.runs import RunStatus  # noqa: E402
from metabuilder.migrations import upgrade  # noqa: E402
from metabuilder.store import access, repository  # noqa: E402
from metabuilder.store.db import make_engine, session_factory, transaction  # noqa: E402
from metabuilder.worker.devserver import free_port  # noqa: E402

PG_ADMIN_DSN = os.environ.get("META_BUILDER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
PLAN = ("name: bench\nsteps:\n  - {name: lint, command: ruff check .}\n  - {name: test, command: pytest -q}\n"
        "  - {name: build, command: make}\n")
GOAL_P99 = 0.050
CLIENT_TIMEOUT = 5.0


@contextlib.contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    name = f"mb_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1) + f"/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def seed(url: str, runs: int) -> tuple[str, list[str]]:
    """A tenant with a viewer token and ``runs`` finished runs of 3 step attempts each."""
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    plan = parse_plan(PLAN)
    ids = [f"bench-{i:04d}" for i in range(runs)]
    with transaction(sessions) as session:
        access.create_tenant(session, "bench")
        token = access.create_token(session, "bench", "loader", Role.VIEWER).token
        for i, run_id in enumerate(ids):
            status = RunStatus.SUCCEEDED if i % 3 else RunStatus.FAILED
            repository.record_run(session, RunRecord(
                run_id=run_id, tenant="bench", status=status, plan=plan, plan_source=PLAN,
                workflow_id=f"build-run-{run_id}", repo_url="/nowhere.git", branch=f"metabuilder/runs/{run_id}",
                base_commit="a" * 40, head_commit="b" * 40))
            for index, step in enumerate(plan.steps):
                attempt = repository.StepAttempt(run_id=run_id, step_index=index, attempt=1, name=step.name,
                                                 queue="cpu", command=step.command, commit_before="a" * 40,
                                                 worker="bench")
                repository.step_finished(session, attempt, status="succeeded", exit_code=0, duration_seconds=1.5,
                                         commit_after="b" * 40, log_tail="ok\n" * 30, log_path="/dev/null")
    engine.dispose()
    return token, ids


@contextlib.contextmanager
def api_process(src: Path, url: str, tmp: Path, port: int, workers: int = 1,
                without: tuple[str, ...] = ()) -> Iterator[subprocess.Popen[bytes]]:
    path = [str(importable(src, tmp))]
    if without:  # modules the server must not find (uvicorn then falls back to h11 and asyncio)
        hide = tmp / "without"
        hide.mkdir(exist_ok=True)
        for name in without:
            (hide / f"{name}.py").write_text(f"raise ImportError('{name} hidden by the benchmark')\n")
        path.insert(0, str(hide))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "META_BUILDER_HOME": str(tmp / "home"),
           "DATABASE_URL": url,
           "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}", "META_BUILDER_LOG_FORMAT": "json"}
    log = (tmp / "api.log").open("w")
    more = ["--workers", str(workers)] if workers > 1 else []
    proc = subprocess.Popen([sys.executable, "-m", "metabuilder.worker.cli", "api", "--host", "127.0.0.1",
                             "--port", str(port), *more],
                            cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                started = workers == 1 or (tmp / "api.log").read_text().count("Started server process") >= workers
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200 and started:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {(tmp / 'api.log').read_text()}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        log.close()


LAYERS = ("domain", "telemetry", "store", "workflows", "activities", "service", "worker", "api", "migrations")


def importable(src: Path, tmp: Path) -> Path:
    """A folder from which ``import metabuilder`` finds ``src``'s code: ``src`` itself for this
    checkout (installed editable), else a ``metabuilder`` folder of links to its layers, ahead of
    the editable install on the path."""
    if src.resolve() == ROOT:
        return src
    package = tmp / "src" / "metabuilder"
    package.mkdir(parents=True)
    for layer in LAYERS:
        (package / layer).symlink_to(src.resolve() / layer)
    return package.parent


def load(url: str, token: str, paths: list[str], schedule: str, healthz_every: float = 0.0) -> dict:  # type: ignore[type-arg]
    cmd = [sys.executable, str(ROOT / "bench" / "load_client.py"), url, token, "--schedule", schedule,
           "--paths", ",".join(paths), "--healthz-every", str(healthz_every), "--timeout", str(CLIENT_TIMEOUT)]
    seconds = sum(float(part.split("x")[1]) for part in schedule.split(","))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + CLIENT_TIMEOUT + 60)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); inf when there are none."""
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def latencies(rows: list[list[object]], statuses: set[int] | None = None) -> list[float]:
    """Latency of each request (a client timeout or error counts as never answered: inf)."""
    return [float(r[1]) if r[2] else float("inf") for r in rows  # type: ignore[arg-type]
            if statuses is None or r[2] in statuses]


def ms(seconds: float) -> str:
    return "timeout" if seconds == float("inf") else f"{seconds * 1000:.1f}"


def summary(rows: list[list[object]]) -> dict[str, object]:
    codes = [int(r[2]) for r in rows]  # type: ignore[call-overload]
    return {"sent": len(rows), "2xx": sum(200 <= c < 300 for c in codes),
            "503": sum(c == 503 for c in codes), "503_retry_after": sum(r[2] == 503 and r[3] is not None for r in rows),
            "other_5xx": sum(c >= 500 and c != 503 for c in codes), "no_answer": codes.count(0),
            "p50_ms": ms(pct(latencies(rows), 50)), "p99_ms": ms(pct(latencies(rows), 99)),
            "max_ms": ms(max(latencies(rows), default=0.0))}


def recovered_after(rows: list[list[object]], end: float, normal: float, window: float = 0.25) -> str:
    """Seconds after ``end`` (the overload's last send) from which every window's p99 is back under
    ``normal`` and every request in it answered 200."""
    after = [r for r in rows if float(r[0]) >= end]  # type: ignore[arg-type]
    if not after:
        return "n/a"
    windows: dict[int, list[list[object]]] = {}
    for r in after:
        windows.setdefault(int((float(r[0]) - end) // window), []).append(r)  # type: ignore[arg-type]
    last = max(windows)
    good_from = None
    for w in range(last + 1):
        ok = w in windows and pct(latencies(windows[w]), 99) < normal and all(r[2] == 200 for r in windows[w])
        if not ok:
            good_from = None
        elif good_from is None:
            good_from = w
    return "not within 3 s" if good_from is None else f"{good_from * window:.2f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its live children (``--workers``)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def sigterm_seconds(proc: subprocess.Popen[bytes], url: str, token: str, paths: list[str], rate: float) -> str:
    """Seconds from SIGTERM (sent 1.5 s into load at ``rate``) to the process's exit; capped at 30 s."""
    client = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load_client.py"), url, token,
                               "--schedule", f"{rate}x4", "--paths", ",".join(paths), "--timeout", "2"],
                              stdout=subprocess.DEVNULL)
    time.sleep(1.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
        took = f"{time.monotonic() - started:.2f}"
    except subprocess.TimeoutExpired:
        took = "> 30"
    client.wait(60)
    return took


def bench(kind: str, args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="mb-load-") as tmp_name, database(kind, Path(tmp_name)) as db_url:
        tmp = Path(tmp_name)
        token, ids = seed(db_url, args.runs)
        port = args.port or free_port()
        url = f"http://127.0.0.1:{port}"
        paths = [p for run_id in ids for p in ("/api/meta/v3/runs?limit=50", f"/api/meta/v3/runs/{run_id}")]
        without = tuple(m for m in args.without.split(",") if m)
        with api_process(Path(args.src), db_url, tmp, port, args.workers, without) as proc:
            load(url, token, paths, "50x2")  # warm-up
            cpu_before = cpu_seconds(proc.pid)
            light = load(url, token, paths, "50x4")
            cpu_per_request = (cpu_seconds(proc.pid) - cpu_before) / len(light["requests"])
            steady = load(url, token, paths, f"{args.rate}x{args.seconds}", healthz_every=0.25)
            over = load(url, token, paths, f"{args.overload}x5,20x3", healthz_every=0.1)
            end = 5.0
            # "Normal" is what this machine gives at light load now, not a fixed figure: the
            # cores are shared, and at light load alone p99 varies several-fold with their load.
            normal = max(GOAL_P99, 2 * pct(latencies(light["requests"]), 99))
            overload_rows = [r for r in over["requests"] if float(r[0]) < end]
            health = [r for r in over["healthz"] if float(r[0]) < end]
            result = {
                "db": kind, "label": args.label + (f", {args.workers} processes" if args.workers > 1 else "")
                + (f", without {args.without}" if without else ""),
                "runs": args.runs, "load": os.getloadavg()[0],
                "light": {"rate": 50, **summary(light["requests"]), "cpu_ms_per_request": ms(cpu_per_request)},
                "steady": {"rate": args.rate, **summary(steady["requests"]),
                           "send_lag_ms": ms(steady["worst_send_lag"])},
                "overload": {"rate": args.overload, **summary(overload_rows),
                             "p99_2xx_ms": ms(pct(latencies(overload_rows, {200}), 99)),
                             "p99_503_ms": ms(pct(latencies(overload_rows, {503}), 99)),
                             "healthz": summary(health), "send_lag_ms": ms(over["worst_send_lag"])},
                "normal_ms": ms(normal),
                "recovered_after_s": recovered_after(over["requests"], end, normal),
                "sigterm_exit_s": sigterm_seconds(proc, url, token, paths, args.rate),
            }
    return result


def table(results: list[dict[str, object]]) -> str:
    head = ("| label | db | load avg | 50/s: p99 ms, CPU ms per request | steady rate | 2xx / sent | 5xx | no answer | "
            "p50 ms | p99 ms | "
            "overload rate | 2xx | 503 (Retry-After) | other 5xx | no answer | p99 2xx ms | p99 503 ms | "
            "healthz p99 ms (failed) | back to normal (p99 under) s | SIGTERM exit s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s, o, light = r["steady"], r["overload"], r["light"]
        assert isinstance(s, dict) and isinstance(o, dict) and isinstance(light, dict)
        h = o["healthz"]
        lines.append(
            f"| {r['label']} | {r['db']} | {float(r['load']):.2f} | "  # type: ignore[arg-type]
            f"{light['p99_ms']}, {light['cpu_ms_per_request']} | {s['rate']:g} | {s['2xx']} / {s['sent']} | "
            f"{int(s['503']) + int(s['other_5xx'])} | {s['no_answer']} | {s['p50_ms']} | {s['p99_ms']} | "
            f"{o['rate']:g} | {o['2xx']} | {o['503']} ({o['503_retry_after']}) | {o['other_5xx']} | "
            f"{o['no_answer']} | {o['p99_2xx_ms']} | {o['p99_503_ms']} | {h['p99_ms']} ({h['no_answer']}) | "
            f"{r['recovered_after_s']} ({r['normal_ms']} ms) | {r['sigterm_exit_s']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both (comma-separated)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--overload", type=float, default=800.0)
    parser.add_argument("--src", default=str(ROOT), help="checkout to serve the API from (default: this one)")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--workers", type=int, default=1, help="API processes (`metabuilder api --workers`)")
    parser.add_argument("--without", default="", help="modules hidden from the server, e.g. httptools,uvloop "
                        "(uvicorn then uses h11 and asyncio's own loop)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("META_BUILDER_API_PORT", "0")))
    parser.add_argument("--json", metavar="FILE", help="also write the raw results here")
    args = parser.parse_args()
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {os.getloadavg()}",
          file=sys.stderr)
    results = [bench(kind.strip(), args) for kind in args.db.split(",")]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
