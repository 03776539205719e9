"""Recorded histories of real runs must keep replaying against the current workflow code.

A change that breaks one of these is a non-deterministic change: guard it with
``workflow.patched`` instead. To add histories, run the workflow tests with
``METABUILDER_RECORD_HISTORIES=1``.
"""

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from metabuilder.workflows.build_run import BuildRunWorkflow
from metabuilder.workflows.notify import GateExpiryWatchWorkflow, WebhookDeliveryWorkflow
from metabuilder.workflows.repair import RepairWorkflow
from tests.workflows.test_build_run import HISTORY_SHAPE

RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("metabuilder.domain", "yaml"))
"""The sandbox as the workers configure it (``worker/runtime.py``): the domain's payload types come
from outside the sandbox, where ``datetime`` is the converter's own (inside, it is a proxy)."""
HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    assert len(HISTORIES) >= 3
    assert any("repair" in p.stem for p in HISTORIES)  # auto-fix runs and their repair children
    # Of the payload shape recorded now too, not only of older ones.
    assert any(p.stem.endswith(f".{HISTORY_SHAPE}") and "repair" in p.stem for p in HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=[BuildRunWorkflow, RepairWorkflow, WebhookDeliveryWorkflow, GateExpiryWatchWorkflow],
                   workflow_runner=RUNNER).replay_workflow(history)
