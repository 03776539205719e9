"""Per-step overhead and throughput of Meta-Builder against bare Temporal, and where it goes.

Both sides run on the same dev server (tuned as the embedded default), in the same process,
one after the other, doing the same work per step: a ``bash -c true`` subprocess in an
activity. Meta-Builder adds what a build step needs: a git checkout, change detection, the
durable record of the step's end, log capture, heartbeats and the DB projection.

    python bench/bench_steps.py [--steps 50] [--shapes 20x3,200x5] [--repeat 1]

Per-step latency is the gap between consecutive ``ActivityTaskScheduled`` events of a run's
history (one full step cycle: dispatch, work, completion, next workflow task). The breakdown
comes from the same histories (dispatch, activity, back in the workflow) and from timing spans
inside the worker (``telemetry/spans.py``): each phase's median and its share per step. CPU time
per step (the worker process, the steps' processes, the dev server) is printed too: on a shared
machine it moves much less with the load than the wall clock.
The workers and the SDK's core log at warning level to a file (``--log``), never between the
tables.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import Client, WorkflowHandle  # noqa: E402
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.bare_workflow import BareSteps, bare_step  # noqa: E402
from metabuilder.adapters.git import git  # noqa: E402
from metabuilder.service.runs import SubmitOptions, submit  # noqa: E402
from metabuilder.telemetry.spans import SPANS, span  # noqa: E402
from metabuilder.worker.devserver import DevServer, free_port  # noqa: E402
from metabuilder.worker.logging import configure_logging  # noqa: E402
from metabuilder.worker.runtime import POOLS, build_workers, prepare_database, running_workers  # noqa: E402
from metabuilder.worker.settings import Settings  # noqa: E402

E = EventType


@dataclass
class Cycle:
    """One run's step cycles read from its history (seconds)."""

    gaps: list[float]
    """ActivityTaskScheduled to the next one."""
    dispatch: list[float]
    """Scheduled to started: the task's wait on its queue and the poll."""
    inside: list[float]
    """Started to completed: the activity itself, and its report."""
    back: list[float]
    """Completed to the next scheduled: the workflow task that decides the next step."""


async def cycles(handle: WorkflowHandle) -> Cycle:
    out = Cycle([], [], [], [])
    scheduled: list[float] = []
    started = completed = 0.0
    async for event in handle.fetch_history_events():
        t = event.event_time.ToDatetime().timestamp()
        if event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if completed:
                out.back.append(t - completed)
            scheduled.append(t)
        elif event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = t
            out.dispatch.append(t - scheduled[-1])
        elif event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = t
            out.inside.append(t - started)
    out.gaps = [b - a for a, b in zip(scheduled, scheduled[1:], strict=False)]
    return out


async def one_commit_repo(repo: Path) -> Path:
    """A user's repository with one committed file, for the runs to snapshot."""
    repo.mkdir()
    await git("init", "--quiet", cwd=repo)
    (repo / "f.txt").write_text("x\n")
    await git("add", "-A", cwd=repo)
    await git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init", cwd=repo)
    return repo


def plan(steps: int) -> str:
    return "name: bench\nsteps:\n" + "".join(f"  - {{name: s{i}, command: 'true'}}\n" for i in range(steps))


def cpu_seconds(server_pid: int | None) -> tuple[float, float, float]:
    """CPU time so far of this process (the workers), of its reaped children (the steps' processes)
    and of the dev server: unlike wall time, it hardly moves with the load of a shared machine."""
    t = os.times()
    server = 0.0
    if server_pid is not None:
        try:
            fields = Path(f"/proc/{server_pid}/stat").read_text().rpartition(")")[2].split()
            server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return t.user + t.system, t.children_user + t.children_system, server


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000 if values else 0.0


def log_to_file(settings: Settings, path: Path) -> None:
    """The workers' log and the SDK core's warnings go to ``path``, not to the terminal."""
    configure_logging(settings, quiet_sdk=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    root = logging.getLogger()
    handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # the SDK's UserWarnings too
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(
        filter="WARN", forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core"))))))


async def main(args: argparse.Namespace) -> None:
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        root = Path(tmp)
        settings = Settings.from_env({"META_BUILDER_HOME": str(root / "home"), "META_BUILDER_LOG_LEVEL": "warning"})
        log_to_file(settings, Path(args.log))
        server = DevServer(root / "temporal", port=free_port(), ui=False)
        server.start(detach=False)
        try:
            client = await server.client()
            settings = replace(settings, temporal_address=server.address,
                               task_queue_prefix=f"b-{uuid.uuid4().hex[:8]}")
            sessions = prepare_database(settings)
            repo = await one_commit_repo(root / "repo")
            server_pid = server.process.pid if server.process is not None else None
            results = await measure(client, settings, sessions, repo, args, shapes, server_pid)
        finally:
            server.stop()
    report(results, args, shapes)


async def measure(client: Client, settings: Settings, sessions, repo: Path,  # type: ignore[no-untyped-def]
                  args: argparse.Namespace, shapes: list[tuple[int, ...]],
                  server_pid: int | None = None) -> dict[str, dict[str, object]]:
    opts = SubmitOptions.of(settings)
    bare_queue = f"bare-{uuid.uuid4().hex[:8]}"

    async def bare_run(steps: int) -> WorkflowHandle:
        h = await client.start_workflow(BareSteps.run, steps, id=f"bare-{uuid.uuid4()}", task_queue=bare_queue)
        await h.result()
        return h

    async def mb_run(steps: int) -> WorkflowHandle:
        with span("run.submit"):
            sub = await submit(client, plan(steps), "bench.yaml", repo, opts)
        await sub.handle.result()
        return sub.handle

    bare_workers = [Worker(client, task_queue=bare_queue, workflows=[BareSteps], activities=[bare_step],
                           max_concurrent_activities=4)]
    results: dict[str, dict[str, object]] = {"bare Temporal": {}, "Meta-Builder": {}}
    async with running_workers(bare_workers), \
            running_workers(build_workers(client, settings, sessions, POOLS, concurrency=4)):
        await bare_run(3)  # warm up both sides
        await mb_run(3)
        for _ in range(args.repeat):
            for name, fn in (("bare Temporal", bare_run), ("Meta-Builder", mb_run)):
                r = results[name]
                SPANS.start()
                before = cpu_seconds(server_pid)
                handle = await fn(args.steps)
                after = cpu_seconds(server_pid)
                r.setdefault("cpu", []).append([(b - a) / args.steps for a, b in zip(before, after, strict=True)])  # type: ignore[union-attr]
                seq = await cycles(handle)
                r.setdefault("seq", []).append(seq)  # type: ignore[union-attr]
                r.setdefault("spans", []).append(SPANS.stop())  # type: ignore[union-attr]
                for runs, steps in shapes:
                    SPANS.start()
                    t0 = time.perf_counter()
                    await asyncio.gather(*(fn(steps) for _ in range(runs)))
                    r.setdefault(f"{runs}x{steps}", []).append(runs / (time.perf_counter() - t0))  # type: ignore[union-attr]
                    r.setdefault(f"spans {runs}x{steps}", []).append(SPANS.stop())  # type: ignore[union-attr]
    return results


def report(results: dict[str, dict[str, object]], args: argparse.Namespace, shapes: list[tuple[int, ...]]) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{args.steps} sequential no-op steps, then concurrent runs ({', '.join(args.shapes.split(','))} "
          f"runs x steps); same server, same process; {os.cpu_count()} CPUs, load average {load}\n")
    cols = ["step median", "step p95", "in activity", *(f"runs/s {s}" for s in args.shapes.split(","))]
    print(f"{'':16}" + "".join(f"{c:>16}" for c in cols))
    rows = {}
    for name, r in results.items():
        seq: list[Cycle] = r["seq"]  # type: ignore[assignment]
        gaps = [g for c in seq for g in c.gaps]
        inside = [g for c in seq for g in c.inside]
        q = statistics.quantiles(gaps, n=20)
        rates = [statistics.median(r[f"{a}x{b}"]) for a, b in shapes]  # type: ignore[arg-type]
        rows[name] = [ms(gaps), q[18] * 1000, ms(inside), *rates]
        print(f"{name:16}" + "".join(f"{v:>13.1f} ms" for v in rows[name][:3])
              + "".join(f"{v:>16.2f}" for v in rates))
    bare, mb = rows["bare Temporal"], rows["Meta-Builder"]
    print(f"{'ratio MB/bare':16}" + "".join(f"{m / b:>15.2f}x" for m, b in zip(mb, bare, strict=True)))
    print("\ngoals: per-step median <= 1.2x, in activity <= 2x, throughput >= 0.8x")

    print("\nOne step cycle, from the histories of the sequential runs (medians, ms):")
    print(f"{'':16}{'dispatch':>12}{'activity':>12}{'workflow':>12}{'cycle':>12}")
    for name, r in results.items():
        seq = r["seq"]  # type: ignore[assignment]
        parts = [ms([g for c in seq for g in getattr(c, f)]) for f in ("dispatch", "inside", "back", "gaps")]
        print(f"{name:16}" + "".join(f"{p:>12.1f}" for p in parts))

    print("\nCPU time per step of the sequential runs (medians, ms; hardly moved by the machine's load):")
    print(f"{'':16}{'worker':>12}{'processes':>12}{'server':>12}{'total':>12}")
    totals = {}
    for name, r in results.items():
        cpu: list[list[float]] = r["cpu"]  # type: ignore[assignment]
        parts = [statistics.median(c[i] for c in cpu) * 1000 for i in range(3)]
        totals[name] = sum(parts)
        print(f"{name:16}" + "".join(f"{p:>12.1f}" for p in [*parts, totals[name]]))
    print(f"{'ratio MB/bare':16}{'':36}{totals['Meta-Builder'] / max(totals['bare Temporal'], 1e-9):>11.2f}x")

    table(f"Inside Meta-Builder's worker, the sequential runs ({args.steps} steps each)",
          results["Meta-Builder"]["spans"], per="step.process", unit="step")  # type: ignore[arg-type]
    runs, steps = shapes[0]
    table(f"Inside Meta-Builder's worker, {runs} concurrent runs of {steps} steps",
          results["Meta-Builder"][f"spans {runs}x{steps}"], per="run.submit", unit="run")  # type: ignore[arg-type]
    print(f"\n(spans of telemetry/spans.py; nested: step.process holds wrapper.*, db.X holds db.X.in_thread, "
          f"run.submit holds submit.*; worker log: {args.log})")


def table(title: str, taken: list[dict[str, list[float]]], *, per: str, unit: str) -> None:
    spans: dict[str, list[float]] = {}
    for t in taken:
        for k, v in t.items():
            spans.setdefault(k, []).extend(v)
    n = max(len(spans.get(per, [])), 1)
    print(f"\n{title}:")
    print(f"{'phase':38}{'count':>7}{'median ms':>11}{f'ms per {unit}':>13}")
    for k in sorted(spans, key=lambda k: -sum(spans[k])):
        v = spans[k]
        print(f"{k:38}{len(v):>7}{ms(v):>11.2f}{sum(v) * 1000 / n:>13.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--shapes", default="20x3,200x5", help="concurrent runs x steps per run, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="measure both sides this many times (medians)")
    parser.add_argument("--log", default=".metabuilder/bench-steps.log", help="where the workers' log goes")
    asyncio.run(main(parser.parse_args()))
