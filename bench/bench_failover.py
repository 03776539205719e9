"""How long a run takes to finish after its worker is SIGKILLed mid-step, against the goal of
the heartbeat timeout + 2 s.

Worker A (a real ``metabuilder worker`` process, every pool) starts the run, so it holds the
run's workflow in its sticky cache and runs the step; worker B starts while the step runs.
A is SIGKILLed; the time is taken from the kill to the run's end on B. In that time: the
step's heartbeat timeout, the retry's backoff, the retry itself, and the workflow task that
went to A's sticky queue first (``META_BUILDER_STICKY_TIMEOUT_SECONDS``) and then to B.

    python bench/bench_failover.py [--heartbeat 3] [--trials 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.api.enums.v1 import EventType  # noqa: E402

from bench.bench_steps import one_commit_repo  # noqa: E402
from metabuilder.domain.runs import RunStatus  # noqa: E402
from metabuilder.service.runs import SubmitOptions, submit  # noqa: E402
from metabuilder.worker.devserver import DevServer, free_port  # noqa: E402
from metabuilder.worker.runtime import prepare_database  # noqa: E402
from metabuilder.worker.settings import Settings  # noqa: E402


def start_worker(settings: Settings, address: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "META_BUILDER_HOME": str(settings.home),
           "META_BUILDER_TASK_QUEUE_PREFIX": settings.task_queue_prefix, "META_BUILDER_LOG_LEVEL": "warning",
           "META_BUILDER_METRICS_PORT": "0", "META_BUILDER_SDK_METRICS_PORT": "0",
           "META_BUILDER_STICKY_TIMEOUT_SECONDS": str(settings.sticky_timeout_seconds)}
    env.pop("DATABASE_URL", None)
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "metabuilder.worker.cli", "worker"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


async def wait_for(path: Path, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.02)


async def trial(client, settings: Settings, server: DevServer, repo: Path, root: Path,  # type: ignore[no-untyped-def]
                heartbeat: float, n: int, verbose: bool) -> tuple[float, int]:
    marker = root / f"started-{n}"
    plan = ("name: failover\nsteps:\n"
            f"  - name: long\n    command: touch {marker}-$METABUILDER_ATTEMPT; "
            f"[ $METABUILDER_ATTEMPT = 1 ] && exec sleep 60; true\n")
    a = start_worker(settings, server.address, root / f"worker-a-{n}.log")
    b = None
    try:
        run = await submit(client, plan, "failover.yaml", repo, SubmitOptions(
            shared_repo=settings.shared_repo, task_queue_prefix=settings.task_queue_prefix,
            heartbeat_timeout_seconds=heartbeat))
        await wait_for(Path(f"{marker}-1"))
        b = start_worker(settings, server.address, root / f"worker-b-{n}.log")
        await asyncio.sleep(4)  # B is up and polling (its start-up is about 1.5 s here)
        a.send_signal(signal.SIGKILL)
        killed, killed_at = time.monotonic(), time.time()
        a.wait()
        view = await run.handle.result()
        took = time.monotonic() - killed
        assert view.status is RunStatus.SUCCEEDED, view.status
        if verbose:
            async for event in run.handle.fetch_history_events():
                t = event.event_time.ToDatetime().replace(tzinfo=UTC).timestamp() - killed_at
                if t > -0.5:
                    name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
                    extra = ""
                    if event.HasField("workflow_task_scheduled_event_attributes"):
                        extra = " on " + event.workflow_task_scheduled_event_attributes.task_queue.name
                    print(f"    {t:+6.2f} s  {name}{extra}")
        return took, view.steps[0].attempt
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(15)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="mb-failover-") as tmp:
        root = Path(tmp)
        server = DevServer(root / "temporal", port=free_port(), ui=False)
        server.start(detach=False)
        try:
            client = await server.client()
            settings = replace(Settings.from_env({"META_BUILDER_HOME": str(root / "home")}),
                               temporal_address=server.address, task_queue_prefix=f"f-{uuid.uuid4().hex[:8]}",
                               sticky_timeout_seconds=args.sticky)
            prepare_database(settings)
            repo = await one_commit_repo(root / "repo")
            times = []
            for n in range(args.trials):
                took, attempt = await trial(client, settings, server, repo, root, args.heartbeat, n, args.verbose)
                times.append(took)
                print(f"trial {n + 1}: run finished {took:.2f} s after its worker was SIGKILLed "
                      f"(step attempt {attempt})")
        finally:
            server.stop()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    goal = args.heartbeat + 2
    print(f"\nheartbeat timeout {args.heartbeat:g} s, sticky schedule-to-start timeout {args.sticky:g} s; "
          f"worst {max(times):.2f} s, goal <= {goal:g} s: {'met' if max(times) <= goal else 'NOT met'} "
          f"({os.cpu_count()} CPUs, load average {load})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heartbeat", type=float, default=3.0, help="the runs' heartbeat timeout, seconds")
    parser.add_argument("--sticky", type=float, default=Settings.from_env({}).sticky_timeout_seconds,
                        help="the workers' sticky queue schedule-to-start timeout, seconds")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="print each run's history from the kill on")
    asyncio.run(main(parser.parse_args()))
