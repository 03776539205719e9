"""Following a run live on a terminal, and printing its summary."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta
from typing import TextIO

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from metabuilder.domain.approvals import GateView
from metabuilder.domain.payloads import AutofixEvent, RunView, StepView
from metabuilder.domain.runs import RunStatus, StepStatus
from metabuilder.workflows.build_run import BuildRunWorkflow

_MARK = {StepStatus.RUNNING: "▸", StepStatus.SUCCEEDED: "✓", StepStatus.FAILED: "✗",
         StepStatus.CANCELLED: "⊘", StepStatus.PENDING: "·", StepStatus.SKIPPED: "↷"}
_STRATEGY_MARK = {"classify": "?", "retry": "↻", "flake_check": "≈", "patch": "✎", "replan": "⇄",
                  "rollback": "↶", "escalate": "⚑"}


def event_line(ev: AutofixEvent) -> str:
    """One timeline entry as a line: what was tried, on which failure, and how it went."""
    signal = f" {ev.signal_type}" + (f" ({ev.confidence:.2f})" if ev.confidence is not None else "") \
        if ev.signal_type else ""
    line = f"      {_STRATEGY_MARK.get(ev.strategy, '-')} {ev.step}: {ev.strategy} {ev.outcome}{signal}"
    if ev.strategy == "retry":
        line += f", attempt {ev.attempt}"
    return line + (f": {ev.detail}" if ev.detail else "")


async def has_pollers(client: Client, queue: str, *, workflow_queue: bool) -> bool:
    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if workflow_queue else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind))
    return len(resp.pollers) > 0


def _step_line(view: StepView, width: int) -> str:
    mark = _MARK.get(view.status, "?")
    line = f"  {mark} {view.name:<{width}} {view.queue:<4} {view.status.value}"
    if view.duration_seconds is not None:
        line += f" in {view.duration_seconds:.2f}s"
    if view.status is StepStatus.FAILED and view.exit_code is not None:
        line += f" (exit code {view.exit_code}" + (f", {view.signal_type}" if view.signal_type else "") + ")"
    if view.flaky:
        line += " (flaky: passed on an unchanged re-run)"
    return line


PROGRESS_EVERY = 30
"""Away from a terminal (a log file, CI), a step still running is reported this often (seconds)."""


class _Progress:
    """How long the running steps have run: one line rewritten in place on a terminal, a line
    every ``PROGRESS_EVERY`` seconds elsewhere."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.since: dict[str, float] = {}
        self.reported: dict[str, int] = {}
        self.live = False

    def clear(self) -> None:
        if self.live:
            self.out.write("\r\x1b[K")
            self.live = False

    def show(self, view: RunView) -> None:
        now = time.monotonic()
        running = [s.name for s in view.steps if s.status is StepStatus.RUNNING]
        self.since = {name: self.since.get(name, now) for name in running}
        if not running:
            return
        if self.tty:
            text = ", ".join(f"{name} {now - self.since[name]:.0f}s" for name in running)
            self.out.write(f"\r\x1b[K      … running: {text}")
            self.out.flush()
            self.live = True
            return
        for name in running:
            mark = int((now - self.since[name]) // PROGRESS_EVERY)
            if mark > self.reported.get(name, 0):
                self.reported[name] = mark
                print(f"      … {name} still running after {mark * PROGRESS_EVERY}s", file=self.out, flush=True)


async def follow(handle: WorkflowHandle[BuildRunWorkflow, RunView], *, out: TextIO = sys.stdout,
                 poll_seconds: float = 1.0) -> RunView:
    """Print each step as it changes, and how long running steps have run, until the run ends;
    return the final view."""
    shown: dict[str, tuple[StepStatus, str | None]] = {}
    events_shown = 0
    gates_shown: dict[str, str] = {}
    waiting_hint = False
    started = time.monotonic()
    progress = _Progress(out)

    def say(text: str) -> None:
        progress.clear()
        print(text, file=out, flush=True)

    while True:
        try:
            view = await handle.query(BuildRunWorkflow.status, rpc_timeout=timedelta(seconds=5))
        except RPCError as err:
            if not waiting_hint and time.monotonic() - started > 3:
                say(f"  … waiting for a worker to pick up the run ({err.message})")
                waiting_hint = True
            await asyncio.sleep(1.0)
            continue
        width = max(len(s.name) for s in view.steps)
        for index, step in enumerate(view.steps):
            key = (step.status, step.commit)
            if step.status is StepStatus.PENDING or shown.get(step.name) == key:
                continue
            shown[step.name] = key
            say(_step_line(step, width))
            if step.status is StepStatus.SUCCEEDED and step.commit and step.commit != _previous_commit(view, index):
                say(f"      committed {step.commit[:12]} on {view.branch}")
        for event in view.timeline[events_shown:]:
            say(event_line(event))
        events_shown = len(view.timeline)
        for gate in view.gates:
            if gates_shown.get(gate.gate_id) != gate.status:
                gates_shown[gate.gate_id] = gate.status
                say(gate_line(gate))
        if view.status.is_final:
            progress.clear()
            out.flush()
            return view
        progress.show(view)
        await asyncio.sleep(poll_seconds)


def gate_line(gate: GateView) -> str:
    """A gate as it opens (with how to decide it) and once it is decided."""
    if gate.pending:
        return (f"  ⏸ approval gate {gate.gate_id}: {gate.reason}\n"
                f"      approve -> {gate.action}; decide with `metabuilder approve {gate.gate_id}` or "
                f"`metabuilder reject {gate.gate_id} --reason ...`\n"
                f"      expires {gate.expires_at:%Y-%m-%dT%H:%M:%S}Z, then: {gate.on_expiry}"
                + ("\n      `metabuilder approvals list` shows the proposed patch" if gate.proposal else ""))
    return f"  ▶ gate {gate.gate_id} {gate.status} by {gate.decided_by}" + (
        f": {gate.decision_reason}" if gate.decision_reason else "")


def _previous_commit(view: RunView, index: int) -> str:
    for step in reversed(view.steps[:index]):
        if step.commit:
            return step.commit
    return view.base_commit


def print_summary(view: RunView, *, repo: str, ui_link: str | None, out: TextIO = sys.stdout) -> None:
    done = sum(1 for s in view.steps if s.status is StepStatus.SUCCEEDED)
    print(f"run {view.run_id}: {view.status.value.upper()} ({done}/{len(view.steps)} steps succeeded)", file=out)
    if view.status in (RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.ESCALATED):
        failed = next((s for s in view.steps if s.status is StepStatus.FAILED), None)
        print(f"  failed step: {view.failed_step}", file=out)
        print(f"  reason:      {view.error}", file=out)
        if failed is not None and failed.log_tail.strip():
            print("  log tail:", file=out)
            for line in failed.log_tail.rstrip().splitlines()[-15:]:
                print(f"    | {line}", file=out)
    if view.timeline:
        print("  auto-fix timeline:", file=out)
        for event in view.timeline:
            print(f"    {event.at:%H:%M:%S} " + event_line(event).strip(), file=out)
    if view.retry_state is not None:
        state = view.retry_state
        print(f"  attempts:    {state.total_attempts} of {state.max_total_attempts} auto-fix attempts used "
              f"({state.attempt_counter} step executions)", file=out)
    if view.sla is not None:
        deadline = f", deadline {view.sla_deadline:%H:%M:%S}" if view.sla_deadline else ""
        print(f"  SLA:         {view.sla.sla_class} ({view.sla_state}{deadline}), priority {view.sla.priority}, "
              f"model tier {view.sla.model_tier}, repair depth {view.sla.repair_depth}", file=out)
    for delta in view.plan_deltas:
        print(f"  re-planned:  {delta.kind} for {delta.step!r}: {delta.reason}", file=out)
    print(f"  workspace:   branch {view.branch} of {repo} at {view.head_commit[:12]}", file=out)
    if ui_link:
        print(f"  Web UI:      {ui_link}", file=out)
    out.flush()
