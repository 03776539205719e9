"""The bare-Temporal side of bench_steps.py: the same per-step work, nothing else."""

import asyncio
from datetime import timedelta

from temporalio import activity, workflow


@activity.defn
async def bare_step(index: int) -> int:
    proc = await asyncio.create_subprocess_exec("bash", "-c", "true")
    await proc.wait()
    return index


@workflow.defn
class BareSteps:
    @workflow.run
    async def run(self, steps: int) -> int:
        for i in range(steps):
            await workflow.execute_activity(bare_step, i, start_to_close_timeout=timedelta(seconds=60))
        return steps
