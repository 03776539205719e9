"""Per-step overhead and throughput of Meta-Builder against bare Temporal.

Both sides run on the same dev server (tuned as the embedded default), in the same
process, doing the same work per step: a ``bash -c true`` subprocess in an activity.
Meta-Builder adds what a build step needs: a git checkout, change detection, log
capture, heartbeats and the DB projection.

    python bench/bench_steps.py [--steps 50] [--runs 20] [--steps-per-run 3]

Per-step latency is the gap between consecutive ``ActivityTaskScheduled`` events of a
run's history (one full step cycle: dispatch, work, completion, next workflow task).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.client import WorkflowHandle  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from metabuilder.adapters.git import git  # noqa: E402
from bench.bare_workflow import BareSteps, bare_step  # noqa: E402
from metabuilder.service.runs import SubmitOptions, submit  # noqa: E402
from metabuilder.worker.devserver import DevServer, free_port  # noqa: E402
from metabuilder.worker.runtime import POOLS, build_workers, prepare_database, running_workers  # noqa: E402
from metabuilder.worker.settings import Settings  # noqa: E402


async def step_gaps(handle: WorkflowHandle) -> tuple[list[float], list[float]]:
    """Gaps between consecutive scheduled steps, and the time each activity ran (started -> completed)."""
    scheduled, started, inside = [], 0.0, []
    async for event in handle.fetch_history_events():
        t = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled.append(t)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = t
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            inside.append(t - started)
    return [b - a for a, b in zip(scheduled, scheduled[1:], strict=False)], inside


def plan(steps: int) -> str:
    return "name: bench\nsteps:\n" + "".join(f"  - {{name: s{i}, command: 'true'}}\n" for i in range(steps))


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mb-bench-") as tmp:
        root = Path(tmp)
        server = DevServer(root / "temporal", port=free_port(), ui=False)
        server.start(detach=False)
        try:
            client = await server.client()
            settings = replace(Settings.from_env({"META_BUILDER_HOME": str(root / "home")}),
                               temporal_address=server.address, task_queue_prefix=f"b-{uuid.uuid4().hex[:8]}")
            sessions = prepare_database(settings)
            repo = root / "repo"
            repo.mkdir()
            await git("init", "--quiet", cwd=repo)
            (repo / "f.txt").write_text("x\n")
            await git("add", "-A", cwd=repo)
            await git("-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init", cwd=repo)
            opts = SubmitOptions(shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix)
            bare_queue = f"bare-{uuid.uuid4().hex[:8]}"

            async def bare_run(steps: int) -> WorkflowHandle:
                h = await client.start_workflow(BareSteps.run, steps, id=f"bare-{uuid.uuid4()}", task_queue=bare_queue)
                await h.result()
                return h

            async def mb_run(steps: int) -> WorkflowHandle:
                sub = await submit(client, plan(steps), "bench.yaml", repo, opts)
                await sub.handle.result()
                return sub.handle

            bare_workers = [Worker(client, task_queue=bare_queue, workflows=[BareSteps], activities=[bare_step],
                                   max_concurrent_activities=4)]
            async with running_workers(bare_workers), \
                    running_workers(build_workers(client, settings, sessions, POOLS, concurrency=4)):
                await bare_run(3)  # warm up both sides
                await mb_run(3)
                results = {}
                for name, fn in (("bare Temporal", bare_run), ("Meta-Builder", mb_run)):
                    gaps, inside = await step_gaps(await fn(args.steps))
                    t0 = time.perf_counter()
                    await asyncio.gather(*(fn(args.steps_per_run) for _ in range(args.runs)))
                    rate = args.runs / (time.perf_counter() - t0)
                    q = statistics.quantiles(gaps, n=20)
                    results[name] = (statistics.median(gaps) * 1000, q[18] * 1000, rate,
                                     statistics.median(inside) * 1000)
        finally:
            server.stop()

    print(f"\n{args.steps} sequential no-op steps; {args.runs} concurrent runs of {args.steps_per_run} steps "
          f"(same server, same process, 2 CPUs)\n")
    print(f"{'':16}{'step median':>13}{'step p95':>11}{'runs/s':>9}{'in activity':>14}")
    for name, (med, p95, rate, act) in results.items():
        print(f"{name:16}{med:>10.1f} ms{p95:>8.1f} ms{rate:>9.2f}{act:>11.1f} ms")
    (bm, bp, br, ba), (mm, mp, mr, ma) = results["bare Temporal"], results["Meta-Builder"]
    print(f"{'ratio MB/bare':16}{mm / bm:>12.2f}x{mp / bp:>10.2f}x{mr / br:>8.2f}x{ma / ba:>11.2f}x")
    print("\naim: per-step ratio <= 1.2x, throughput ratio >= 0.8x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps-per-run", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
