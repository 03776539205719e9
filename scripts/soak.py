"""Fault soak: many runs through worker SIGKILLs and a Temporal restart, then check the record.

    .venv/bin/python scripts/soak.py [--runs 44] [--report bench/SOAK.md]    (or: make soak)

Everything is real and local: a Temporal dev server of its own (port from
META_BUILDER_DEV_SERVER_PORT, else a free one), two worker processes sharing one home (its
SQLite DB, worker cache and shared repository), real git and real commands. Runs are submitted
a few at a time; while steps are in flight, worker A and later worker B are SIGKILLed (each
restarted), and between the two the dev server is stopped and started again on the same data.

Then, for every run: its end in Temporal and in the DB, exactly one ``succeeded`` row per step,
no attempt left ``running``, the step commits of the workflow's view equal to the DB's, and each
step's side effect (a line appended to a file outside the workspace, as the command ends)
present exactly once. Bounded: it gives up after ``--deadline`` seconds. Not part of CI.

With ``--chaos P`` (``make soak-chaos``: 200 runs x 5 steps, P = 0.1) the workers also inject
chaos faults (``domain.chaos``) into a share P of the step attempts, across the recoverable types
(``--chaos-types``), and the report says how many runs reached the expected end (succeeded: each
of those types is retried or re-planned by the policy), explains any other from the recorded
injections, and gives the recovery times from ``mb_v4_chaos_event``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from temporalio.client import Client, WorkflowExecutionStatus  # noqa: E402

from metabuilder.domain.runs import AttemptStatus, workflow_id  # noqa: E402
from metabuilder.migrations import upgrade  # noqa: E402
from metabuilder.service.runs import SubmitOptions, resolve_autofix, submit  # noqa: E402
from metabuilder.store import repository  # noqa: E402
from metabuilder.store.db import make_engine, session_factory, transaction  # noqa: E402
from metabuilder.store.models import BuildRun, BuildStep  # noqa: E402
from metabuilder.worker.devserver import DevServer, free_port  # noqa: E402
from metabuilder.worker.settings import Settings  # noqa: E402
from metabuilder.workflows.build_run import BuildRunWorkflow  # noqa: E402

STEPS = {"build": "echo out > out.txt", "test": "test -f out.txt", "package": "cp out.txt pkg.txt",
         "verify": "test -f pkg.txt", "publish": "cp pkg.txt dist.txt"}
HEARTBEAT_TIMEOUT = 3.0
CHAOS_TYPES = "transient_error,rate_limit,infra_kill,latency,timeout,schema_drift,disk_full"
"""The types a run recovers from by itself. Not ``worker_crash`` (the soak kills workers itself) nor
``security_finding`` (a person decides at a gate)."""
CHAOS_STEP_TIMEOUT = 12
"""Seconds; short, so that a ``timeout`` fault is the step's own timeout (it hangs past it)."""


@dataclass
class Fault:
    kind: str
    at: float
    in_flight: list[tuple[str, int, int]] = field(default_factory=list)
    """(run, step index, attempt) running on the killed worker at the kill."""
    recovered_after: list[float] = field(default_factory=list)
    back_at: float | None = None


class Soak:
    def __init__(self, home: Path, runs: int, seed: int, *, steps: int = 3, chaos: float = 0.0,
                 chaos_types: str = CHAOS_TYPES) -> None:
        self.home, self.runs, self.rng = home, runs, random.Random(seed)
        self.seed, self.steps = seed, dict(list(STEPS.items())[:steps])
        self.chaos, self.chaos_types = chaos, chaos_types
        self.prefix = f"soak-{seed}"
        self.settings = Settings.from_env({"META_BUILDER_HOME": str(home),
                                           "META_BUILDER_TASK_QUEUE_PREFIX": self.prefix})
        self.effects = home / "effects"
        self.logs = home / "logs"
        port = int(os.environ.get("META_BUILDER_DEV_SERVER_PORT") or free_port())
        self.server = DevServer(home / "temporal", port=port, ui=False)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.faults: list[Fault] = []
        self.run_ids: list[str] = []
        upgrade(self.settings.database_url)
        self.sessions = session_factory(make_engine(self.settings.database_url))

    # --- processes ------------------------------------------------------------------------------

    def start_worker(self, name: str) -> None:
        env = {**os.environ, "TEMPORAL_ADDRESS": self.server.address, "META_BUILDER_HOME": str(self.home),
               "META_BUILDER_TASK_QUEUE_PREFIX": self.prefix, "META_BUILDER_LOG_LEVEL": "warning",
               "META_BUILDER_METRICS_PORT": "0", "META_BUILDER_SDK_METRICS_PORT": "0"}
        env.pop("DATABASE_URL", None)
        if self.chaos:
            env.update({"META_V4_CHAOS_ENABLED": "true", "META_V4_CHAOS_WEIGHTS": self.chaos_types})
        with (self.logs / f"worker-{name}.log").open("ab") as out:
            self.workers[name] = subprocess.Popen([sys.executable, "-m", "metabuilder.worker.cli", "worker"],
                                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def running_on(self, pid: int) -> list[tuple[str, int, int]]:
        with transaction(self.sessions) as s:
            rows = s.query(BuildStep).filter(BuildStep.status == AttemptStatus.RUNNING.value,
                                             BuildStep.worker.like(f"%:{pid}")).all()
            return [(r.run_id, r.step_index, r.attempt) for r in rows]

    async def kill_worker(self, name: str) -> None:
        proc = self.workers[name]
        async with asyncio.timeout(60):  # wait until it has steps in flight
            while not (in_flight := self.running_on(proc.pid)):
                await asyncio.sleep(0.05)
        await asyncio.sleep(self.rng.uniform(0.0, 0.8))  # anywhere in the command, or just after it
        in_flight = self.running_on(proc.pid) or in_flight
        fault = Fault(kind=f"SIGKILL worker {name}", at=time.time(), in_flight=in_flight)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.faults.append(fault)
        print(f"  {fault.kind}: {len(in_flight)} step attempt(s) in flight", flush=True)
        await asyncio.sleep(1.0)
        self.start_worker(name)

    async def restart_server(self) -> Client:
        fault = Fault(kind="dev server stop and start", at=time.time())
        self.server.stop()
        await asyncio.sleep(3.0)
        self.server.start(detach=False)
        fault.back_at = time.time()
        self.faults.append(fault)
        print(f"  {fault.kind}: down {fault.back_at - fault.at:.1f}s", flush=True)
        return await self.server.client()

    # --- runs -----------------------------------------------------------------------------------

    def plan(self) -> str:
        lines = ["name: soak"]
        if self.chaos:  # a missing table is re-planned: a migration step (a no-op here) inserted first
            lines += ["repair:", "  migrate: echo migrated"]
        lines.append("steps:")
        sleeps = (0.2, 0.5, 1.0, 1.5, 4.0) if self.chaos else (0.5, 1.0, 1.5, 2.0, 6.0)
        for step, work in self.steps.items():
            # The side effect is the command's last act, outside the workspace.
            # Some commands outlive a heartbeat timeout: a kill then finds one still running.
            command = (f"sleep {self.rng.choice(sleeps):.1f}; {work} && "
                       f"echo {step} >> {self.effects}/$METABUILDER_RUN_ID")
            lines += [f"  - name: {step}", f"    command: {command}"]
            if self.chaos:
                lines.append(f"    timeout: {CHAOS_STEP_TIMEOUT}s")
        return "\n".join(lines) + "\n"

    def enable_chaos(self) -> None:
        from metabuilder.domain.chaos import parse_weights
        from metabuilder.service import chaos

        chaos.enable(self.sessions, self.settings.chaos, chaos.ScopeRequest(
            tenant="default", probability=self.chaos, weights=parse_weights(self.chaos_types), seed=self.seed),
            actor="scripts/soak.py", production=False)

    async def submit_all(self, client: Client, repo: Path) -> Client:
        opts = SubmitOptions.of(self.settings, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT,
                                autofix=resolve_autofix(self.settings.autofix, self.sessions, "default",
                                                        {"enabled": True}) if self.chaos else None)
        chaos = {self.runs // 4: ("kill", "a"), self.runs // 2: ("server", ""), (3 * self.runs) // 4: ("kill", "b")}
        for n in range(self.runs):
            run = await submit(client, self.plan(), "soak.yaml", repo, opts)
            self.run_ids.append(run.run_id)
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))
            match chaos.get(n):
                case ("kill", name):
                    await self.kill_worker(name)
                case ("server", _):
                    client = await self.restart_server()
        return client

    def ended(self) -> dict[str, str]:
        with transaction(self.sessions) as s:
            rows = s.query(BuildRun.id, BuildRun.status).filter(BuildRun.id.in_(self.run_ids)).all()
            return {r.id: r.status for r in rows if r.status not in ("pending", "running")}

    def recovery(self) -> None:
        """Seconds from each kill until each step then in flight had its next attempt finish; from
        the server's return until the first step attempt finished after it."""
        with transaction(self.sessions) as s:
            for fault in self.faults:
                if fault.in_flight:
                    for run_id, index, attempt in fault.in_flight:
                        later = [r for r in repository.step_attempts(s, run_id, index, attempt + 1, attempt + 20)
                                 if r.finished_at is not None]
                        if later:
                            fault.recovered_after.append(_ts(later[0].finished_at) - fault.at)
                elif fault.back_at is not None:
                    first = s.query(BuildStep).filter(BuildStep.finished_at.isnot(None)).all()
                    after = sorted(_ts(r.finished_at) for r in first if _ts(r.finished_at) > fault.back_at)
                    if after:
                        fault.recovered_after.append(after[0] - fault.back_at)

    # --- the check ------------------------------------------------------------------------------

    async def check(self, client: Client) -> dict[str, object]:
        problems: list[str] = []
        statuses: Counter[str] = Counter()
        attempts: Counter[str] = Counter()
        duplicated_effects = 0
        for run_id in self.run_ids:
            handle = client.get_workflow_handle(workflow_id(run_id))
            desc = await handle.describe()
            view = await handle.query(BuildRunWorkflow.status)
            with transaction(self.sessions) as s:
                run = repository.get_run(s, run_id)
                rows = repository.run_steps(s, run_id)
            status = run.status if run else "missing"
            statuses[status] += 1
            attempts.update(r.status for r in rows)
            if (desc.status == WorkflowExecutionStatus.COMPLETED) != (status == "succeeded"):
                problems.append(f"{run_id}: Temporal says {desc.status.name if desc.status else None}, DB {status}")
            if view.status.value != status:
                problems.append(f"{run_id}: workflow view {view.status.value}, DB {status}")
            for step in view.steps:  # by name: a re-plan inserts steps, the rows keep their index
                won = [r for r in rows if r.name == step.name and r.status == AttemptStatus.SUCCEEDED]
                if len(won) != 1:
                    problems.append(f"{run_id} {step.name}: {len(won)} succeeded rows")
                elif won[0].commit_after != step.commit:
                    problems.append(f"{run_id} {step.name}: DB commit {won[0].commit_after}, workflow {step.commit}")
            if open_rows := [r for r in rows if r.status == AttemptStatus.RUNNING]:
                problems.append(f"{run_id}: {len(open_rows)} attempt(s) left running")
            effects = Counter((self.effects / run_id).read_text().split()) if (self.effects / run_id).exists() else {}
            for step in self.steps:
                if effects.get(step, 0) != 1:
                    duplicated_effects += effects.get(step, 0) > 1
                    problems.append(f"{run_id} {step}: side effect happened {effects.get(step, 0)} times")
        result: dict[str, object] = {"statuses": statuses, "attempts": attempts, "problems": problems,
                                     "duplicated_effects": duplicated_effects}
        if self.chaos:
            result.update(self.chaos_result(statuses))
        return result

    def chaos_result(self, statuses: Counter[str]) -> dict[str, object]:
        """The injections and their recoveries, and each run that did not succeed with the faults
        its steps drew (the decisions are deterministic: they explain the run)."""
        from metabuilder.domain.chaos import EXPECTED_CLASS, FaultType
        from metabuilder.domain.policy import DEFAULT_MAX_RETRIES
        from metabuilder.service import chaos
        from metabuilder.store import chaos as chaos_rows

        view = chaos.stats(self.sessions, self.settings.chaos, tenant="default")
        unexpected = []
        with transaction(self.sessions) as s:
            for run_id in self.run_ids:
                run = repository.get_run(s, run_id)
                if run is None or run.status == "succeeded":
                    continue
                drawn = [(e.step_name, e.attempt, e.fault_type) for e in chaos_rows.events(s, run_id=run_id)]
                per_step = Counter(step for step, _, _ in drawn)
                # More faults on one step than its classes allow retries, or a second missing table
                # after the re-plan: the policy gives up, as it should.
                beyond = any(n > min(DEFAULT_MAX_RETRIES.get(str(EXPECTED_CLASS[FaultType(t)]), 0) + 1
                                     for st, _, t in drawn if st == step) or
                             sum(1 for st, _, t in drawn if st == step and t == "schema_drift") > 1
                             for step, n in per_step.items())
                unexpected.append((run_id, run.status, drawn, beyond, run.error or ""))
        expected = statuses.get("succeeded", 0) + sum(1 for u in unexpected if u[3])
        return {"chaos": view, "unexpected": unexpected, "expected_end": expected, "gaps": self.gaps()}

    def gaps(self) -> dict[str, list[float]]:
        """Seconds from an attempt's end to the next attempt's start: after an injected fault (the
        class's delay plus the wait in the pool's queue), and from a passed step to the run's next
        step (the queue wait alone)."""
        from metabuilder.store import chaos as chaos_rows

        after_fault: list[float] = []
        next_step: list[float] = []
        with transaction(self.sessions) as s:
            for run_id in self.run_ids:
                rows = sorted(repository.run_steps(s, run_id), key=lambda r: _ts(r.started_at))
                injected = {(e.step_name, e.attempt) for e in chaos_rows.events(s, run_id=run_id)
                            if e.fault_type != "latency"}
                for r in rows:
                    if r.finished_at is None:
                        continue
                    later = [n for n in rows if _ts(n.started_at) >= _ts(r.finished_at) and n is not r]
                    if (r.name, r.attempt) in injected:
                        same = [n for n in later if n.name == r.name]
                        if same:
                            after_fault.append(_ts(same[0].started_at) - _ts(r.finished_at))
                    elif r.status == AttemptStatus.SUCCEEDED and later:
                        next_step.append(_ts(later[0].started_at) - _ts(r.finished_at))
        return {"after_fault": after_fault, "next_step": next_step}


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _chaos_report(soak: Soak, result: dict[str, object]) -> list[str]:
    view = result["chaos"]
    unexpected: list[tuple[str, str, list[tuple[str, int, str]], bool, str]] = result["unexpected"]  # type: ignore[assignment]

    def num(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:g}{unit}"

    lines = ["", f"## Chaos: {soak.chaos:g} of the step attempts, across {soak.chaos_types.replace(',', ', ')}", "",
             f"Runs reaching the expected end (succeeded; or, for a step that drew more faults in a row than its "
             f"class's retries, failed by the policy): **{result['expected_end']} of {soak.runs}**.", "",
             "| fault type | injected | recovered | unrecovered | pending | recovery rate | mean (s) | p95 (s) |",
             "|---|---|---|---|---|---|---|---|"]
    rows = [(str(k), v) for k, v in view.stats.by_type.items() if v.injections] + [("all", view.stats.total)]  # type: ignore[attr-defined]
    for name, t in rows:
        lines.append(f"| {name} | {t.injections} | {t.recovered} | {t.unrecovered} | {t.pending} | "
                     f"{num(t.recovery_rate)} | {num(t.mean_recovery_seconds)} | {num(t.p95_recovery_seconds)} |")
    lines += ["", "Recovery time: from the injection until the step passed (a later attempt, after the class's "
              "backoff or Retry-After, a re-plan, or a lost worker's heartbeat timeout; the same attempt for a "
              "latency)."]
    gaps: dict[str, list[float]] = result["gaps"]  # type: ignore[assignment]
    if gaps["after_fault"] and gaps["next_step"]:
        lines += ["", f"Most of it is the wait in the pool's queue, not the policy: from a faulted attempt's end to "
                  f"the step's next attempt, median {statistics.median(gaps['after_fault']):.1f} s; from a passed "
                  f"step's end to its run's next step (no fault, no delay), median "
                  f"{statistics.median(gaps['next_step']):.1f} s. The runs are submitted in about "
                  f"{soak.runs * 0.4:.0f} s, faster than two workers (4 steps at a time each) run them, so every "
                  "step waits behind the backlog; the class delays themselves are 1 to 4 s (2 s for the "
                  "Retry-After). The conformance (`metabuilder chaos conformance`) measures those waits alone."]
    if unexpected:
        lines += ["", "Runs that did not succeed, with the faults their steps drew (step, attempt, type):", ""]
        for run_id, status, drawn, beyond, error in unexpected:
            why = "the policy gave up, as it should" if beyond else "NOT explained by the faults"
            lines.append(f"- {run_id}: {status} ({why}); {', '.join(f'{s} #{a} {t}' for s, a, t in drawn) or 'none'}"
                         + (f"; {error.splitlines()[0][:200]}" if error else ""))
    return lines


def _user_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    for args in (["init", "-q", "--initial-branch=main"], ["add", "--all"]):
        if args[0] == "add":
            (path / "README.txt").write_text("soak\n")
        subprocess.run(["git", *args], cwd=path, check=True)
    subprocess.run(["git", "-c", "user.name=soak", "-c", "user.email=soak@localhost", "commit", "-qm", "init"],
                   cwd=path, check=True)
    return path


def _report(soak: Soak, result: dict[str, object], seconds: float, load: tuple[float, float, float]) -> str:
    statuses: Counter[str] = result["statuses"]  # type: ignore[assignment]
    attempts: Counter[str] = result["attempts"]  # type: ignore[assignment]
    problems: list[str] = result["problems"]  # type: ignore[assignment]
    lines = [
        "# Fault soak",
        "",
        f"`{'make soak-chaos' if soak.chaos else 'make soak'}` (scripts/soak.py), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {soak.runs} runs of a "
        f"{len(soak.steps)}-step plan (each step sleeps {'0.2 to 4' if soak.chaos else '0.5 to 6'} s, then appends "
        "its name to a file outside the "
        "workspace), two worker processes sharing one home and worker cache, heartbeat timeout "
        f"{HEARTBEAT_TIMEOUT:g} s. Machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the start (shared with other work).",
        "",
        "| fault | in flight | recovery (s) |",
        "|---|---|---|",
    ]
    for f in soak.faults:
        rec = ", ".join(f"{r:.1f}" for r in f.recovered_after) or "-"
        lines.append(f"| {f.kind} | {f'{len(f.in_flight)} step attempt(s)' if f.in_flight else '-'} | {rec} |")
    lines += [
        "",
        "Recovery: for a kill, from the SIGKILL until the next attempt of each step then in flight finished "
        f"(at least the heartbeat timeout, {HEARTBEAT_TIMEOUT:g} s, plus the time to pick it up); for the server, "
        "from its return until the first step attempt finished.",
        "",
        "| result | figure |",
        "|---|---|",
        f"| runs succeeded | {statuses.get('succeeded', 0)} of {soak.runs} |",
        f"| run statuses | {', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))} |",
        f"| attempt rows | {', '.join(f'{k} {v}' for k, v in sorted(attempts.items()))} |",
        f"| steps with a side effect twice | {result['duplicated_effects']} |",
        f"| DB disagreeing with Temporal, a step without exactly one succeeded row, attempts left running | "
        f"{len(problems)} problem(s) |",
        f"| wall time | {seconds:.0f} s |",
    ]
    if problems:
        lines += ["", "Problems:", "", *(f"- {p}" for p in problems[:40])]
    if soak.chaos:
        lines += _chaos_report(soak, result)
    if recovered := [r for f in soak.faults if f.in_flight for r in f.recovered_after]:
        lines += ["", f"Worker-kill recovery: median {statistics.median(recovered):.1f} s, max {max(recovered):.1f} s."]
    return "\n".join(lines) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=44)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds before giving up")
    parser.add_argument("--report", type=Path, help="write the report (markdown) here")
    parser.add_argument("--home", type=Path, help="data directory (default: a new temporary one)")
    parser.add_argument("--steps", type=int, default=3, choices=range(1, len(STEPS) + 1), help="steps per run")
    parser.add_argument("--chaos", type=float, default=0.0, help="share of step attempts given a chaos fault")
    parser.add_argument("--chaos-types", default=CHAOS_TYPES, help="the fault types (type=weight or type, ...)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="metabuilder-soak-"))
    types = ",".join(t if "=" in t else f"{t}=1" for t in args.chaos_types.split(","))
    soak = Soak(home, args.runs, args.seed, steps=args.steps, chaos=args.chaos, chaos_types=types)
    soak.effects.mkdir(parents=True, exist_ok=True)
    soak.logs.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    started = time.time()
    print(f"soak: {args.runs} runs in {home}", flush=True)
    soak.server.start(detach=False)
    try:
        client = await soak.server.client()
        if soak.chaos:
            soak.enable_chaos()
        soak.start_worker("a")
        soak.start_worker("b")
        client = await soak.submit_all(client, _user_repo(home / "user-repo"))
        async with asyncio.timeout(max(1.0, args.deadline - (time.time() - started))):
            while len(soak.ended()) < len(soak.run_ids):
                await asyncio.sleep(0.5)
        seconds = time.time() - started
        soak.recovery()
        result = await soak.check(client)
    finally:
        for proc in soak.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        soak.server.stop()
    report = _report(soak, result, seconds, load)
    print(report)
    if args.report:
        args.report.write_text(report)
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
