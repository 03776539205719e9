"""``metabuilder chaos conformance``: inject each class into a probe plan on the real engine and
check the policy's reaction.

The engine is the demo's: the database at head, the embedded dev server (or the configured
Temporal), the workflow worker in this process, and two step workers as processes of their own
(``metabuilder worker``, chaos on, on task queues of this conformance only, so no other worker
takes a probe and these take nothing else). Each class gets one run of a one-step plan with a
run scope that injects its fault into the step's first attempt(s); then the DB's attempt rows and
the run's own view say how the policy reacted:

- TRANSIENT (a 503, twice): retried after the class's backoff, each wait at least that long;
- RATE_LIMIT (a 429): waits the Retry-After it asked for;
- INFRA (the step kills its worker): retried, and the retry lands on the other worker;
- SCHEMA_MIGRATION (a missing table): re-planned, a migration step inserted before it;
- SECURITY (a vulnerable dependency): escalated to an approval gate, never retried (the run is
  then cancelled).

It prints a table of class, expected and observed, and exits 0 only if every row holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TextIO

from metabuilder.adapters.git import git
from metabuilder.domain.chaos import FaultType
from metabuilder.domain.payloads import RunView
from metabuilder.domain.policy import AutofixPolicy
from metabuilder.domain.runs import WORKFLOW_QUEUE, RunStatus, new_run_id
from metabuilder.domain.taxonomy import FailureType
from metabuilder.worker.settings import Environment, Settings

TENANT = "chaos-conformance"
PROBE_STEP = "probe"
PROBE_PLAN = f"""\
name: chaos-probe
description: One step for chaos conformance; each class's fault is injected into it.
repair:
  migrate: echo migrated
steps:
  - name: {PROBE_STEP}
    command: echo probe >> probe.log
    timeout: 30s
"""
HEARTBEAT_TIMEOUT_SECONDS = 6.0
"""A lost worker is noticed this soon. Not much less: a step heartbeats only while it checks out,
runs its command and classifies a failure, not while it records rows, and on a loaded machine a
2 s timeout was seen to expire (before classification heartbeated), so that a SECURITY failure
was retried (a timeout is retryable) instead of escalated."""
WAIT_TOLERANCE_SECONDS = 0.25
"""A wait counts as at least its delay when it is at most this much shorter (clocks, row writes)."""
RUN_DEADLINE_SECONDS = 150.0


@dataclass(frozen=True)
class Probe:
    failure_class: FailureType
    fault: FaultType
    attempts: int
    """How many first attempts get the fault."""


PROBES = (
    Probe(FailureType.TRANSIENT, FaultType.TRANSIENT_ERROR, 2),
    Probe(FailureType.RATE_LIMIT, FaultType.RATE_LIMIT, 1),
    Probe(FailureType.INFRA, FaultType.WORKER_CRASH, 1),
    Probe(FailureType.SCHEMA_MIGRATION, FaultType.SCHEMA_DRIFT, 1),
    Probe(FailureType.SECURITY, FaultType.SECURITY_FINDING, 1),
)


@dataclass(frozen=True)
class AttemptSeen:
    attempt: int
    status: str
    signal_type: str | None
    backoff_seconds: float | None
    retry_after_seconds: float | None
    started_at: float
    finished_at: float | None
    worker: str


@dataclass(frozen=True)
class Observation:
    """What one probe run did, from the DB's attempt rows and the run's view."""

    failure_class: FailureType
    run_id: str
    status: str
    attempts: list[AttemptSeen] = field(default_factory=list)
    """The probe step's attempts, in order."""
    plan_deltas: list[tuple[str, str]] = field(default_factory=list)
    open_gates: int = 0
    injected: list[tuple[int, str]] = field(default_factory=list)
    """(attempt, fault type) of each recorded injection."""
    killed_workers: list[str] = field(default_factory=list)
    """Step workers of this conformance found dead afterwards (``host:pid``)."""

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Observation:
        return cls(failure_class=FailureType(str(data["failure_class"])), run_id=str(data["run_id"]),
                   status=str(data["status"]),
                   attempts=[AttemptSeen(**a) for a in data["attempts"]],  # type: ignore[attr-defined]
                   plan_deltas=[tuple(d) for d in data["plan_deltas"]],  # type: ignore[attr-defined,misc]
                   open_gates=int(data["open_gates"]),  # type: ignore[call-overload]
                   injected=[tuple(i) for i in data["injected"]],  # type: ignore[attr-defined,misc]
                   killed_workers=list(data["killed_workers"]))  # type: ignore[call-overload]


@dataclass(frozen=True)
class Expectation:
    """What the policy should do, from the run's own policy and the faults' settings."""

    transient_delays: tuple[float, ...]
    retry_after_seconds: float
    tolerance_seconds: float = WAIT_TOLERANCE_SECONDS

    @classmethod
    def of(cls, policy: AutofixPolicy, retry_after_seconds: float) -> Expectation:
        transient = next(p for p in PROBES if p.failure_class is FailureType.TRANSIENT)
        return cls(transient_delays=tuple(policy.delay(FailureType.TRANSIENT, n)
                                          for n in range(1, transient.attempts + 1)),
                   retry_after_seconds=policy.delay(FailureType.RATE_LIMIT, 1, retry_after=retry_after_seconds))


@dataclass(frozen=True)
class Row:
    failure_class: FailureType
    expected: str
    observed: str
    holds: bool


def _waits(attempts: Sequence[AttemptSeen]) -> list[float]:
    """Seconds from each attempt's end to the next one's start."""
    return [round(b.started_at - a.finished_at, 2) for a, b in zip(attempts, attempts[1:], strict=False)
            if a.finished_at is not None]


def _passed(obs: Observation) -> bool:
    return obs.status == RunStatus.SUCCEEDED and bool(obs.attempts) and obs.attempts[-1].status == "succeeded"


def check(obs: Observation, exp: Expectation) -> Row:
    """Whether the run did what the policy says for its class; the observed text says what it did."""
    a, cls = obs.attempts, obs.failure_class
    signals = [x.signal_type or "-" for x in a]
    end = f"run {obs.status}"
    match cls:
        case FailureType.TRANSIENT:
            n = len(exp.transient_delays)
            delays, waits = [x.backoff_seconds for x in a[:n]], _waits(a[:n + 1])
            expected = (f"retried after {', '.join(f'{d:g}s' for d in exp.transient_delays)} (its backoff), "
                        "then passes")
            holds = (signals[:n] == [cls.value] * n and delays == list(exp.transient_delays)
                     and len(waits) == n and all(w >= d - exp.tolerance_seconds
                                                 for w, d in zip(waits, exp.transient_delays, strict=True))
                     and _passed(obs))
            observed = (f"{'/'.join(signals)}; backoff {delays}; waited {', '.join(f'{w:g}s' for w in waits)}; "
                        f"{end}")
        case FailureType.RATE_LIMIT:
            waits = _waits(a[:2])
            expected = f"waits the Retry-After {exp.retry_after_seconds:g}s, then passes"
            first = a[0] if a else None
            holds = (first is not None and first.signal_type == cls.value
                     and first.retry_after_seconds == exp.retry_after_seconds
                     and first.backoff_seconds == exp.retry_after_seconds and len(waits) == 1
                     and waits[0] >= exp.retry_after_seconds - exp.tolerance_seconds and _passed(obs))
            observed = (f"{'/'.join(signals)}; Retry-After {first.retry_after_seconds if first else None}; "
                        f"waited {', '.join(f'{w:g}s' for w in waits) or '-'}; {end}")
        case FailureType.INFRA:
            expected = "retried after its worker is lost, on another worker, then passes"
            workers = [x.worker for x in a]
            holds = (len(a) >= 2 and a[0].status in ("failed", "lost") and a[0].worker in obs.killed_workers
                     and a[-1].worker != a[0].worker and _passed(obs))
            observed = (f"attempt 1 {a[0].status if a else '-'} on {workers[0] if a else '-'}"
                        f"{' (killed)' if a and a[0].worker in obs.killed_workers else ''}; "
                        f"last attempt {a[-1].status if a else '-'} on {workers[-1] if a else '-'}; {end}")
        case FailureType.SCHEMA_MIGRATION:
            expected = f"re-planned: a migration step before {PROBE_STEP}, not retried as it is; then passes"
            holds = (bool(a) and a[0].signal_type == cls.value and a[0].backoff_seconds is None
                     and obs.plan_deltas == [("insert_step", PROBE_STEP)] and _passed(obs))
            observed = (f"{'/'.join(signals)}; plan changes {obs.plan_deltas or 'none'}; "
                        f"backoff {a[0].backoff_seconds if a else None}; {end}")
        case FailureType.SECURITY:
            expected = "escalated to an approval gate, never retried"
            holds = (len(a) == 1 and a[0].signal_type == cls.value and a[0].backoff_seconds is None
                     and obs.status == RunStatus.PAUSED_AWAITING_APPROVAL and obs.open_gates >= 1)
            observed = (f"{'/'.join(signals)}; {len(a)} attempt(s); {obs.open_gates} gate(s) open; {end}"
                        " (then cancelled)")
        case _:
            raise ValueError(f"no conformance check for {cls}")
    return Row(cls, expected, observed, holds)


def render(rows: Sequence[Row], out: TextIO) -> None:
    width = max(len("class"), *(len(r.failure_class) for r in rows))
    exp_w = max(len("expected"), *(len(r.expected) for r in rows))
    print(f"{'class':<{width}}  {'expected':<{exp_w}}  holds  observed", file=out)
    for r in rows:
        print(f"{r.failure_class:<{width}}  {r.expected:<{exp_w}}  {'yes' if r.holds else 'NO':<5}  {r.observed}",
              file=out)


@dataclass(frozen=True)
class Report:
    rows: list[Row]
    observations: list[Observation]
    expectation: Expectation

    @property
    def holds(self) -> bool:
        return bool(self.rows) and all(r.holds for r in self.rows)

    def to_json(self) -> dict[str, object]:
        return {"holds": self.holds, "expectation": asdict(self.expectation),
                "rows": [asdict(r) for r in self.rows], "observations": [asdict(o) for o in self.observations]}


# --- the run ---------------------------------------------------------------------------------------

async def probe_workspace(home: Path) -> Path:
    """A fresh git repository with the probe plan committed."""
    workspace = home / "chaos-conformance" / f"workspace-{uuid.uuid4().hex[:10]}"
    workspace.mkdir(parents=True)
    (workspace / "chaos-probe.yaml").write_text(PROBE_PLAN)
    (workspace / "README.txt").write_text("The chaos conformance probe's workspace.\n")
    await git("init", "--quiet", "--initial-branch=main", cwd=workspace)
    await git("add", "--all", cwd=workspace)
    await git("-c", "user.name=Meta-Builder", "-c", "user.email=conformance@localhost", "-c", "commit.gpgsign=false",
              "commit", "--quiet", "-m", "chaos probe", cwd=workspace)
    return workspace


@contextlib.contextmanager
def step_workers(settings: Settings, prefix: str, logs: Path, count: int = 2,
                 force: bool = False) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` step worker processes (cpu pool) on ``prefix``'s queues, chaos on (forced too
    with ``force``: the production environment refuses it otherwise)."""
    env = {**os.environ, "META_BUILDER_HOME": str(settings.home), "DATABASE_URL": settings.database_url,
           "META_BUILDER_TASK_QUEUE_PREFIX": prefix, "META_BUILDER_SHARED_REPO": settings.shared_repo,
           "META_BUILDER_ARTIFACTS_DIR": str(settings.artifacts_dir), "META_BUILDER_CACHE_DIR": str(settings.cache_dir),
           "META_BUILDER_METRICS_PORT": "0", "META_BUILDER_SDK_METRICS_PORT": "0",
           "META_BUILDER_LOG_LEVEL": "warning", "META_V4_CHAOS_ENABLED": "true",
           "META_V4_CHAOS_RETRY_AFTER_SECONDS": f"{settings.chaos.params.retry_after_seconds:g}"}
    if settings.embedded:
        env["META_BUILDER_DEV_SERVER_PORT"] = str(settings.dev_server_port)
    if force:
        env["META_V4_CHAOS_FORCE"] = "true"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        for i in range(count):
            with (logs / f"worker-{i + 1}.log").open("ab") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "metabuilder.worker.cli", "worker", "--queues", "cpu"],
                    env=env, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _until_settled(handle, security: bool, procs: Sequence[subprocess.Popen[bytes]],  # type: ignore[no-untyped-def]
                         logs: Path) -> RunView:
    from datetime import timedelta

    from metabuilder.service.errors import Unavailable
    from metabuilder.workflows.build_run import BuildRunWorkflow

    deadline = time.monotonic() + RUN_DEADLINE_SECONDS
    while True:
        if all(p.poll() is not None for p in procs):
            raise Unavailable(f"the conformance's step workers have all exited (their logs: {logs})")
        try:
            view: RunView = await handle.query(BuildRunWorkflow.status, rpc_timeout=timedelta(seconds=5))
        except Exception:  # noqa: BLE001 (not started yet, or a query timeout under load: ask again)
            view = None  # type: ignore[assignment]
        if view is not None and (view.status.is_final or (
                security and view.status is RunStatus.PAUSED_AWAITING_APPROVAL)):
            return view
        if time.monotonic() > deadline:
            if view is None:
                raise TimeoutError(f"run {handle.id} did not start within {RUN_DEADLINE_SECONDS:g}s")
            return view
        await asyncio.sleep(0.5)


def _observe(sessions, probe: Probe, run_id: str, view: RunView, dead: list[str]) -> Observation:  # type: ignore[no-untyped-def]
    from metabuilder.store import chaos as chaos_rows
    from metabuilder.store import repository
    from metabuilder.store.db import transaction

    with transaction(sessions) as session:
        rows = [r for r in repository.run_steps(session, run_id) if r.name == PROBE_STEP]
        attempts = [AttemptSeen(attempt=r.attempt, status=r.status, signal_type=r.signal_type,
                                backoff_seconds=r.backoff_seconds, retry_after_seconds=r.retry_after_seconds,
                                started_at=chaos_rows.aware(r.started_at).timestamp(),
                                finished_at=chaos_rows.aware(r.finished_at).timestamp() if r.finished_at else None,
                                worker=r.worker) for r in sorted(rows, key=lambda r: r.attempt)]
        injected = [(e.attempt, e.fault_type) for e in chaos_rows.events(session, run_id=run_id)]
    return Observation(probe.failure_class, run_id, view.status.value, attempts,
                       [(d.kind.value, d.step) for d in view.plan_deltas],
                       sum(1 for g in view.gates if g.pending), injected, dead)


async def run_conformance(settings: Settings, *, classes: Sequence[FailureType] | None = None,
                          force: bool = False, out: TextIO = sys.stdout) -> Report:
    """Run the probes (all, or those of ``classes``) and check each; see the module's docstring."""
    import socket

    from metabuilder.service import chaos as chaos_service
    from metabuilder.service.runs import SubmitOptions, resolve_autofix, submit
    from metabuilder.worker.runtime import build_workers, connect, prepare_database, running_workers

    probes = [p for p in PROBES if classes is None or p.failure_class in classes]
    production = settings.environment is Environment.PRODUCTION
    chaos_service.check_allowed(settings.chaos, production=production, force=force)
    sessions = prepare_database(settings)
    client = await connect(settings)
    workspace = await probe_workspace(settings.home)
    prefix = f"{settings.task_queue_prefix}-chaos-{uuid.uuid4().hex[:8]}"
    autofix = resolve_autofix(settings.autofix, sessions, TENANT, {"enabled": True})
    opts = replace(SubmitOptions.of(settings, tenant=TENANT, autofix=autofix,
                                    heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_SECONDS), task_queue_prefix=prefix)
    expectation = Expectation.of(autofix.policy(), settings.chaos.params.retry_after_seconds)
    print(f"chaos conformance: {len(probes)} probe run(s) of tenant {TENANT!r} on task queues {prefix}-*", file=out)
    run_ids = {p.failure_class: new_run_id() for p in probes}
    for p in probes:
        chaos_service.enable(sessions, settings.chaos, chaos_service.ScopeRequest(
            tenant=TENANT, run_id=run_ids[p.failure_class], probability=1.0, weights={p.fault: 1.0},
            steps=(PROBE_STEP,), max_attempt=p.attempts, for_seconds=RUN_DEADLINE_SECONDS * 2),
            actor="metabuilder chaos conformance", production=production, force=force)
    observations = []
    try:
        with step_workers(settings, prefix, workspace.parent / "logs", force=force) as procs:
            async with running_workers(build_workers(client, settings, sessions, [WORKFLOW_QUEUE], prefix=prefix)):
                # The worker crash takes down every step on its worker: it goes last, alone.
                batches = [[p for p in probes if p.fault is not FaultType.WORKER_CRASH],
                           [p for p in probes if p.fault is FaultType.WORKER_CRASH]]
                handles, views = {}, []
                for batch in batches:
                    for p in batch:
                        handles[p.failure_class] = (await submit(client, PROBE_PLAN, "chaos-probe.yaml", workspace,
                                                                 opts, run_id=run_ids[p.failure_class])).handle
                    views += await asyncio.gather(*(_until_settled(handles[p.failure_class],
                                                                   p.failure_class is FailureType.SECURITY,
                                                                   procs, workspace.parent / "logs")
                                                    for p in batch))
                probes = [p for batch in batches for p in batch]
                host = socket.gethostname()
                dead = [f"{host}:{proc.pid}" for proc in procs if proc.poll() is not None]
                observations = [_observe(sessions, p, run_ids[p.failure_class], v, dead) for p, v in zip(
                    probes, views, strict=True)]
                for p, view in zip(probes, views, strict=True):  # the SECURITY run waits at its gate
                    if not view.status.is_final:
                        handle = handles[p.failure_class]
                        with contextlib.suppress(Exception):
                            await handle.cancel()
                            await asyncio.wait_for(handle.result(), timeout=30)
    finally:
        for p in probes:
            with contextlib.suppress(Exception):
                chaos_service.disable(sessions, TENANT, "metabuilder chaos conformance", run_ids[p.failure_class])
    rows = [check(o, expectation) for o in observations]
    report = Report(rows, observations, expectation)
    render(rows, out)
    print(("every row holds" if report.holds else "some rows do NOT hold") + f"; runs {', '.join(run_ids.values())}",
          file=out)
    return report


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
