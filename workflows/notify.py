"""Durable delivery of one webhook notification: its activity makes one attempt, Temporal retries
it with backoff. Apart from the run's workflow, so a receiver never holds a run up."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from metabuilder.domain.notifications import MAX_RETRY_INTERVAL_SECONDS, DeliveryInput, GateWatch


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, inp: DeliveryInput) -> str:
        """``delivered``, ``refused``, ``gone`` or ``failed`` (the delivery log says why)."""
        try:
            return str(await workflow.execute_activity(
                "deliver_webhook", inp, result_type=str,
                start_to_close_timeout=timedelta(seconds=inp.timeout_seconds + 5),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=inp.retry_seconds), backoff_coefficient=2.0,
                                         maximum_interval=timedelta(seconds=MAX_RETRY_INTERVAL_SECONDS),
                                         maximum_attempts=inp.max_attempts)))
        except ActivityError:
            # A worker lost mid-attempt on the last try, say: the log keeps the last outcome it saw.
            return "failed"


@workflow.defn(name="GateExpiryWatchWorkflow")
class GateExpiryWatchWorkflow:
    """Sleeps until a gate's warning time, then has the gate announced as expiring if nobody has
    decided it (the activity reads the gate's state then)."""

    @workflow.run
    async def run(self, inp: GateWatch) -> bool:
        wait = (inp.warn_at - workflow.now()).total_seconds()
        if wait > 0:
            await workflow.sleep(wait)
        return bool(await workflow.execute_activity(
            "warn_gate_expiring", inp, result_type=bool, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5)))
