"""CPU time per request of the API app alone, in one process: no HTTP server, no load generator.

The ASGI app (``metabuilder.worker.api_server.create_app``, as ``metabuilder api`` builds it) is
called directly, ``--concurrency`` requests at a time on one event loop (uvloop when installed),
``--requests`` of each kind of ``bench_api_load.py``'s mix: ``GET /api/meta/v3/runs?limit=50``
and ``GET /api/meta/v3/runs/{id}``. The figure is the process's CPU time (all threads) per
request. What it leaves out: uvicorn's HTTP parsing and its access log line, which
``bench_api_load.py``'s "CPU ms per request" includes.

    python bench/bench_api_cpu.py [--db sqlite] [--src-before DIR] [--rounds 2]

With ``--src-before`` (a checkout of the code before, e.g. ``git archive`` of a commit), each
round measures that checkout, then this one, one after the other over the same seeded database,
each in a fresh process; and the bodies and headers (but the request id) of every distinct request
are compared between the two, so that a change that alters a response shows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

KINDS = {"list": "/api/meta/v3/runs?limit=50", "detail": "/api/meta/v3/runs/{id}"}
SKIP_HEADERS = {b"x-request-id"}


def child(url: str, token: str, ids: list[str], requests: int, concurrency: int,
          kinds: tuple[str, ...] = tuple(KINDS)) -> dict[str, object]:
    """Build the app from the environment and time ``requests`` of each kind (run in a subprocess)."""
    os.environ["DATABASE_URL"] = url
    from metabuilder.worker.api_server import create_app, loop_factory

    app = create_app()
    headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {token}".encode()), (b"accept", b"*/*")]

    async def call(target: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        path, _, query = target.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": query.encode(), "root_path": "", "headers": headers,
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        start = sent[0]
        body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
        return int(start["status"]), body, list(start.get("headers", []))  # type: ignore[call-overload, arg-type]

    def targets(kind: str) -> list[str]:
        return [KINDS[kind].format(id=ids[i % len(ids)]) for i in range(requests)]

    async def timed(kind: str) -> dict[str, object]:
        queue = list(reversed(targets(kind)))
        statuses: dict[int, int] = {}

        async def worker() -> None:
            while queue:
                status, _, _ = await call(queue.pop())
                statuses[status] = statuses.get(status, 0) + 1

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        return {"cpu_ms": cpu * 1000 / requests, "wall_ms": wall * 1000 / requests, "statuses": statuses}

    async def main() -> dict[str, object]:
        digests = {}
        for target in sorted({t for kind in KINDS for t in targets(kind)[:len(ids)]}):  # also the warm-up
            status, body, sent_headers = await call(target)
            kept = sorted((k, v) for k, v in sent_headers if k not in SKIP_HEADERS)
            digests[target] = hashlib.sha256(repr((status, body, kept)).encode()).hexdigest()
        return {kind: await timed(kind) for kind in KINDS if kind in kinds} | {"digests": digests}

    factory = loop_factory()
    if factory is None:
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def measure(src: Path, url: str, token: str, ids: list[str], args: argparse.Namespace, tmp: Path) -> dict:  # type: ignore[type-arg]
    from bench_api_load import importable

    where = Path(tempfile.mkdtemp(dir=tmp))
    env = {**os.environ, "PYTHONPATH": str(importable(src, where)), "META_BUILDER_HOME": str(where / "home"),
           "TEMPORAL_ADDRESS": "127.0.0.1:1", "META_BUILDER_LOG_FORMAT": "json"}
    cmd = [sys.executable, __file__, "--child", json.dumps([url, token, ids]), "--requests", str(args.requests),
           "--concurrency", str(args.concurrency)]
    out = subprocess.run(cmd, cwd=src, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite or postgres")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000, help="of each kind, per measurement")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--src-before", help="a checkout of the code before, measured first in each round")
    parser.add_argument("--kinds", default=",".join(KINDS), help="of the child only (for a profiler): list, detail")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, token, ids = json.loads(args.child)
        print(json.dumps(child(url, token, ids, args.requests, args.concurrency, tuple(args.kinds.split(",")))))
        return

    from bench_api_load import database, seed

    sides = ([("before", Path(args.src_before))] if args.src_before else []) + [("after", ROOT)]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {args.db}, {args.requests} requests "
          f"of each kind, {args.concurrency} at a time", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mb-cpu-") as tmp_name, database(args.db, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        token, ids = seed(url, args.runs)
        rows, digests = [], {}
        for round_no in range(1, args.rounds + 1):
            for label, src in sides:
                load = os.getloadavg()[0]
                result = measure(src, url, token, ids, args, tmp)
                digests[label] = result.pop("digests")
                rows.append((round_no, label, load, result))
                print(f"round {round_no} {label}: load {load:.2f} {json.dumps(result)}", file=sys.stderr)
    print("| round | code | load avg | list of 50: ms CPU (wall) | one run: ms CPU (wall) | statuses |")
    print("|---|---|---|---|---|---|")
    for round_no, label, load, r in rows:
        statuses = {k: v for kind in KINDS for k, v in r[kind]["statuses"].items()}
        print(f"| {round_no} | {label} | {load:.2f} | {r['list']['cpu_ms']:.2f} ({r['list']['wall_ms']:.2f}) | "
              f"{r['detail']['cpu_ms']:.2f} ({r['detail']['wall_ms']:.2f}) | {statuses} |")
    if len(digests) == 2:
        differ = sorted(t for t in digests["after"] if digests["after"][t] != digests["before"].get(t))
        print(f"\nresponses compared: {len(digests['after'])}, differing: {len(differ)} {differ[:5]}")


if __name__ == "__main__":
    main()
