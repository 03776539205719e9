"""``BuildRunWorkflow``: one durable workflow per build run."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

from domain.payloads import (
    RUN_FAILED,
    STEP_FAILED,
    BuildRunInput,
    RunRecord,
    RunView,
    StepInput,
    StepResult,
    StepView,
)
from domain.runs import RunStatus, StepStatus, task_queue, workflow_id
from workflows import search_attributes as sa

CHECKOUT_MARGIN = timedelta(minutes=2)
"""Time beyond a step's own timeout for checkout, commit and push."""

STEP_INFRA_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=[STEP_FAILED],
)
"""Retries for a step whose *worker* failed (lost heartbeat, git or DB error); a command
that exits non-zero is a step failure, not retried here."""

RECORD_TIMEOUT = timedelta(seconds=30)


@workflow.defn
class BuildRunWorkflow:
    @workflow.init
    def __init__(self, inp: BuildRunInput) -> None:
        self._view = RunView(
            run_id=inp.run_id, plan_name=inp.plan.name, tenant=inp.tenant, status=RunStatus.PENDING,
            steps=[StepView(name=s.name, queue=s.queue.value) for s in inp.plan.steps],
            base_commit=inp.workspace.base_commit, head_commit=inp.workspace.base_commit,
            branch=inp.workspace.branch,
        )

    @workflow.run
    async def run(self, inp: BuildRunInput) -> RunView:
        await self._set_status(inp, RunStatus.RUNNING)
        for index, step in enumerate(inp.plan.steps):
            view = self._view.steps[index]
            view.status = StepStatus.RUNNING
            try:
                result = await workflow.execute_activity(
                    "run_step",
                    StepInput(run_id=inp.run_id, tenant=inp.tenant, step_index=index, step=step,
                              repo_url=inp.workspace.repo_url, branch=inp.workspace.branch,
                              commit=self._view.head_commit),
                    result_type=StepResult,
                    activity_id=f"{index:03d}-{step.name}",
                    task_queue=task_queue(inp.task_queue_prefix, step.queue.value),
                    start_to_close_timeout=timedelta(seconds=step.timeout_seconds) + CHECKOUT_MARGIN,
                    heartbeat_timeout=timedelta(seconds=inp.heartbeat_timeout_seconds),
                    retry_policy=STEP_INFRA_RETRY,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
            except (asyncio.CancelledError, CancelledError):
                await self._cancelled(inp, view)
                raise
            except ActivityError as err:
                if isinstance(err.cause, CancelledError):
                    await self._cancelled(inp, view)
                    raise asyncio.CancelledError() from err
                await self._step_failed(inp, view, err)
                raise ApplicationError(self._view.error or "step failed", self._view,
                                       type=RUN_FAILED, non_retryable=True) from err
            view.status = StepStatus.SUCCEEDED
            view.exit_code, view.duration_seconds = result.exit_code, result.duration_seconds
            view.commit, view.attempt, view.log_tail = result.commit, result.attempt, result.log_tail
            self._view.head_commit = result.commit
        await self._set_status(inp, RunStatus.SUCCEEDED)
        return self._view

    @workflow.query
    def status(self) -> RunView:
        """The run as it stands: status, each step's state, the head commit."""
        return self._view

    async def _step_failed(self, inp: BuildRunInput, view: StepView, err: ActivityError) -> None:
        view.status = StepStatus.FAILED
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.type == STEP_FAILED and cause.details:
            details: dict[str, Any] = cause.details[0]
            view.exit_code = details.get("exit_code")
            view.duration_seconds = details.get("duration_seconds")
            view.attempt = details.get("attempt", view.attempt)
            view.log_tail = details.get("log_tail", "")
            reason = cause.message
        elif isinstance(cause, TimeoutError):
            reason = f"step {view.name!r} did not finish: {cause.type.name.lower().replace('_', '-')} timeout"
        else:
            reason = f"step {view.name!r} could not be run: {cause.message if cause else err.message}"
        self._view.failed_step = view.name
        self._view.error = reason
        await self._set_status(inp, RunStatus.FAILED)

    async def _cancelled(self, inp: BuildRunInput, view: StepView) -> None:
        view.status = StepStatus.CANCELLED
        self._view.error = "cancelled"
        await self._set_status(inp, RunStatus.CANCELLED)

    async def _set_status(self, inp: BuildRunInput, status: RunStatus) -> None:
        self._view.status = status
        workflow.upsert_search_attributes([sa.RUN_STATUS.value_set(status.value)])
        record = RunRecord(
            run_id=inp.run_id, tenant=inp.tenant, status=status, plan=inp.plan, plan_source=inp.plan_source,
            workflow_id=workflow_id(inp.run_id), repo_url=inp.workspace.repo_url, branch=inp.workspace.branch,
            base_commit=inp.workspace.base_commit, head_commit=self._view.head_commit,
            source=inp.workspace.source, failed_step=self._view.failed_step, error=self._view.error,
        )
        await workflow.execute_local_activity("record_run", record, start_to_close_timeout=RECORD_TIMEOUT)

