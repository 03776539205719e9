"""Payloads recorded with older shapes decode into today's types with their values, and today's
payloads encode the enums as the plain strings they always were.

Replay only checks the commands a workflow issues; a repair child in flight when a new version is
deployed also needs its input's values (task queues, log tail, write scope) to go on correctly.
"""

from __future__ import annotations

import base64
import json
import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.converter import DataConverter, value_to_type

from metabuilder.activities.repair import RepairActivities
from metabuilder.activities.shapes import current
from metabuilder.activities.steps import StepActivities
from metabuilder.domain.outcomes import EventOutcome, RepairOutcome, Strategy
from metabuilder.domain.payloads import (
    ApplyInput,
    AutofixEvent,
    FixInput,
    RepairInput,
    RepairResult,
    RollbackInput,
    StepInput,
)
from metabuilder.domain.taxonomy import FailureType

HISTORIES = Path(__file__).parent.parent / "histories"
OLD_CHILDREN = sorted(p for p in HISTORIES.glob("autofix_*_repair_1.json") if "." not in p.stem)
"""Repair children recorded before the slim ``RepairInput`` (a whole ``BuildRunInput``, the plan twice)."""


def _payload(event: dict, key: str) -> dict:  # type: ignore[type-arg]
    [payload] = event[key]["input"]["payloads"] if "input" in event[key] else event[key]["result"]["payloads"]
    return json.loads(base64.b64decode(payload["data"]))  # type: ignore[no-any-return]


def _events(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(path.read_text())["events"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", OLD_CHILDREN, ids=[p.stem for p in OLD_CHILDREN])
def test_an_old_repair_input_decodes_with_its_values(path: Path) -> None:
    raw = _payload(_events(path)[0], "workflowExecutionStartedEventAttributes")
    inp = value_to_type(RepairInput, raw)
    assert inp.run.run_id == raw["run"]["run_id"] and inp.run.tenant == raw["run"]["tenant"]
    assert inp.run.task_queue_prefix == raw["run"]["task_queue_prefix"]
    assert inp.run.heartbeat_timeout_seconds == raw["run"]["heartbeat_timeout_seconds"]
    assert inp.run.ref.repo_url == raw["run"]["workspace"]["repo_url"]
    assert inp.run.ref.branch == raw["run"]["workspace"]["branch"]
    assert inp.run.autofix is not None and inp.run.autofix.policy.max_total_attempts == 6
    assert inp.failed.log_tail == raw["failed"]["log_tail"] != ""
    assert inp.signal.fingerprint == raw["signal"]["fingerprint"]
    assert inp.plan.write_scope == raw["plan"]["write_scope"]
    assert inp.plan.repair.migrate_command == raw["plan"]["repair"]["migrate_command"]
    assert len(inp.plan.protected_checks) == len(raw["plan"].get("protected_checks", []))


@pytest.mark.parametrize("path", OLD_CHILDREN, ids=[p.stem for p in OLD_CHILDREN])
def test_an_old_repair_result_decodes_as_an_outcome(path: Path) -> None:
    done = next(e for e in _events(path) if e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED")
    raw = _payload(done, "workflowExecutionCompletedEventAttributes")
    result = value_to_type(RepairResult, raw)
    assert result.outcome is RepairOutcome(raw["outcome"])
    assert [(e.strategy, e.outcome) for e in result.events] == [(e["strategy"], e["outcome"]) for e in raw["events"]]
    assert [e.at for e in result.events] == [datetime.fromisoformat(e["at"]) for e in raw["events"]]


def test_enums_encode_as_the_plain_strings() -> None:
    at = datetime(2026, 12, 1, 7, 8, 9, 123456, tzinfo=UTC)
    event = AutofixEvent(seq=1, at=at, step="s", strategy=Strategy.FLAKE_CHECK,
                         outcome=EventOutcome.FAILED_AGAIN, signal_type=FailureType.TEST_ASSERT)
    [payload] = DataConverter.default.payload_converter.to_payloads([event])
    data = json.loads(payload.data)
    assert (data["strategy"], data["outcome"], data["signal_type"]) == ("flake_check", "failed_again", "TEST_ASSERT")
    assert data["at"] == "2026-12-01T07:08:09.123456+00:00"  # as the isoformat() strings were
    assert DataConverter.default.payload_converter.from_payloads([payload], [AutofixEvent]) == [event]


_ACTIVITIES = {"run_step": StepActivities, "propose_fix": RepairActivities, "propose_llm_patch": RepairActivities,
               "apply_patch": RepairActivities, "rollback": RepairActivities}
ACTIVITY_INPUTS = {"run_step": StepInput, "propose_fix": FixInput, "propose_llm_patch": FixInput,
                   "apply_patch": ApplyInput, "rollback": RollbackInput}
OLD_RUNS = sorted(p for p in HISTORIES.glob("*.json") if "." not in p.stem and "repair" not in p.stem)
OLD_SCHEDULED = sorted({
    (e["activityTaskScheduledEventAttributes"]["activityType"]["name"], path.stem): e
    for path in [*OLD_RUNS, *OLD_CHILDREN] for e in _events(path)
    if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
    and e["activityTaskScheduledEventAttributes"]["activityType"]["name"] in ACTIVITY_INPUTS}.items())
"""One activity of each type per old history, as the previous version scheduled it."""


@pytest.mark.parametrize(("key", "event"), OLD_SCHEDULED, ids=[f"{k[1]}-{k[0]}" for k, _ in OLD_SCHEDULED])
def test_an_activity_scheduled_by_the_previous_version_runs_on_this_one(key: tuple[str, str], event: dict) -> None:  # type: ignore[type-arg]
    name = key[0]
    raw = _payload(event, "activityTaskScheduledEventAttributes")
    cls = ACTIVITY_INPUTS[name]
    # What the worker's converter makes of it with the activity's own parameter type.
    arg_type = typing.get_type_hints(getattr(_ACTIVITIES[name], name))["inp"]
    inp = current(cls, DataConverter.default.payload_converter.from_payloads(
        DataConverter.default.payload_converter.to_payloads([raw]), [arg_type])[0])
    assert isinstance(inp, cls)
    assert (inp.run.run_id, inp.run.repo_url, inp.run.branch) == (raw["run_id"], raw["repo_url"], raw["branch"])
    assert inp.run.tenant == raw.get("tenant", "default")
    if isinstance(inp, StepInput):
        assert (inp.commit, inp.step.name) == (raw["commit"], raw["step"]["name"])
        assert inp.attempt_base == raw.get("attempt_base", 0)  # the oldest runs had no attempt base


def test_there_are_old_activity_inputs_of_each_kind() -> None:
    assert {name for name, _ in (k for k, _ in OLD_SCHEDULED)} == set(ACTIVITY_INPUTS)
