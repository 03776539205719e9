"""What a step's log costs in the database: a command writes 100 MiB of log while a StepWatch
(the worker's log shipper, ``activities/step_watch.py``) follows it into a real PostgreSQL.

Two logs: a build log (compiler and test lines, numbers varying: it compresses about as real logs
do) and the worst case (random hex, which hardly compresses; it hits the 16 MiB cap). The command
is a separate process, so this process's CPU time is the shipper's alone. Figures: how long the
shipper lags behind the command at its end (the time the step path waits for the last write),
the shipper's CPU seconds, its peak memory (Python allocations, and the process's peak RSS
growth), and what the database holds (compressed bytes, chunk rows, the table's size on disk).

    python bench/bench_step_log.py [--mib 100] [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from metabuilder.activities.step_watch import LogSettings, StepWatcher, Watched  # noqa: E402
from metabuilder.migrations import upgrade  # noqa: E402
from metabuilder.store import hosts  # noqa: E402
from metabuilder.store.db import make_engine, session_factory, transaction  # noqa: E402
from metabuilder.store.hosts import AttemptKey  # noqa: E402

BUILD_LOG = r"""
import random, sys
r = random.Random(7)
out = sys.stdout.buffer
total = int(sys.argv[1])
written = 0
lines = [
    "gcc -O2 -Wall -c src/module_{a}/file_{b}.c -o build/obj/module_{a}/file_{b}.o\n",
    "  CC       src/core/alloc_{b}.o\n",
    "test_{a}_{b} ... ok ({c} ms)\n",
    "[{c:>6}/{d}] Building CXX object lib/CMakeFiles/lib{a}.dir/part{b}.cpp.o\n",
    "warning: unused variable 'tmp{b}' [-Wunused-variable] in src/module_{a}/file_{b}.c:{c}\n",
]
while written < total:
    block = "".join(r.choice(lines).format(a=r.randrange(40), b=r.randrange(900), c=r.randrange(99999),
                                          d=r.randrange(99999)) for _ in range(2000)).encode()
    out.write(block)
    written += len(block)
"""

RANDOM_LOG = r"""
import os, sys
total = int(sys.argv[1])
written = 0
while written < total:
    block = os.urandom(32768).hex().encode() + b"\n"
    sys.stdout.buffer.write(block)
    written += len(block)
"""


async def one(kind: str, source: str, size: int, sessions, tmp: Path,  # type: ignore[no-untyped-def]
              level: int) -> dict[str, float]:
    log_path = tmp / f"{kind}.log"
    key = AttemptKey(f"bench-{uuid.uuid4().hex[:8]}", 0, 1)
    watcher = StepWatcher(sessions, "bench@host", LogSettings(level=level))
    tracemalloc.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu_before = time.process_time()
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", source, str(size), stdout=out)
        watch = watcher.watch(Watched(key, "build", "cpu", 10.0), log_path)
        began = time.monotonic()
        watch.start()
        await proc.wait()
        ended = time.monotonic()
        await watch.close()
        closed = time.monotonic()
    cpu = time.process_time() - cpu_before
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    with transaction(sessions) as s:
        raw, stored = hosts.log_size(s, key)
        chunks = len(hosts.log_chunks(s, key))
    return {"log_mib": log_path.stat().st_size / 2**20, "command_s": ended - began, "lag_at_end_s": closed - ended,
            "shipper_cpu_s": cpu, "py_peak_mib": peak / 2**20, "rss_growth_mib": rss_growth / 1024,
            "stored_raw_mib": raw / 2**20, "stored_mib": stored / 2**20, "chunks": chunks}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--level", type=int, default=LogSettings().level, help="zlib level")
    parser.add_argument("--pg", default=os.environ.get("META_BUILDER_TEST_PG",
                                                        "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    name = f"mb_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.pg)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = args.pg.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1) + f"/{name}"
    try:
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with tempfile.TemporaryDirectory() as tmp:
            for kind, source in (("build log", BUILD_LOG), ("random hex (worst case)", RANDOM_LOG)):
                figures = await one(kind.split()[0], source, args.mib * 2**20, sessions, Path(tmp), args.level)
                print(f"{kind}: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in figures.items()))
        with engine.connect() as conn:
            from sqlalchemy import text

            size = conn.execute(text("select pg_total_relation_size('mb_v4_step_log_chunk')")).scalar_one()
        print(f"mb_v4_step_log_chunk on disk (both logs, with TOAST and index): {size / 2**20:.2f} MiB")
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    asyncio.run(main())
