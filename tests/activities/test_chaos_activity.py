"""Chaos in the step activity: each fault is made by the attempt's real process (real bash, real
git, a real SQLite DB), the real classifier reads it, and a later pass settles it as recovered."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError

from metabuilder.activities.chaos import Chaos
from metabuilder.activities.steps import StepActivities
from metabuilder.activities.workspace import Workspace
from metabuilder.adapters.git import WorkspaceCache
from metabuilder.domain.chaos import EXPECTED_CLASS, ChaosSettings, Fault, FaultType, fault_command
from metabuilder.domain.classifier import classify
from metabuilder.domain.policy import AutofixPolicy
from metabuilder.migrations import upgrade
from metabuilder.store import chaos as chaos_rows
from metabuilder.store.db import make_engine, session_factory, transaction
from metabuilder.store.models import ChaosScope
from metabuilder.worker.settings import Settings, SettingsError
from tests.activities.test_steps import attempt, rows, step_input


@pytest.mark.parametrize("fault_type", [f for f in FaultType if f is not FaultType.WORKER_CRASH])
def test_each_fault_is_made_by_a_real_process_and_classified_as_its_class(fault_type: FaultType) -> None:
    seconds = {FaultType.LATENCY: 0.2, FaultType.RATE_LIMIT: 3.0, FaultType.TIMEOUT: 1.0}.get(fault_type, 0.0)
    timeout = 0.5 if fault_type is FaultType.TIMEOUT else 30.0
    cmd = fault_command(Fault(fault_type, seconds), "echo the real command ran", step_timeout=timeout,
                        worker_pid=1, step="probe")
    try:
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=timeout + 1.5)
        code, log = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as hung:  # as the runner does at the step's timeout
        code, log = 124, (hung.stderr or b"") + b"\n[metabuilder] step timed out after 0.5s; killed\n"
    code = 128 - code if code < 0 else code
    expected = EXPECTED_CLASS[fault_type]
    if expected is None:
        assert code == 0 and b"the real command ran" in log
        return
    assert code != 0 and b"the real command ran" not in log
    signal = classify([log], exit_code=code)
    assert signal.type is expected, (code, log)
    if fault_type is FaultType.RATE_LIMIT:
        assert signal.retry_after == 3.0


def test_a_timeout_longer_than_the_cap_is_a_client_timeout_after_the_cap() -> None:
    cmd = fault_command(Fault(FaultType.TIMEOUT, 0.2), "true", step_timeout=600.0, worker_pid=1)
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, timeout=10)
    assert done.returncode == 28
    assert str(classify([done.stderr], exit_code=28).type) == "TRANSIENT"


@pytest.fixture
def steps(tmp_path: Path) -> Iterator[StepActivities]:
    url = f"sqlite:///{tmp_path / 'mb.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions: sessionmaker[Session] = session_factory(engine)
    chaos = Chaos(sessions, ChaosSettings(enabled=True))
    yield StepActivities(Workspace(tmp_path / "artifacts", WorkspaceCache(tmp_path / "cache")), sessions,
                         chaos=chaos)
    engine.dispose()


async def test_an_injected_503_is_retried_by_the_policy_and_the_pass_settles_it(
        steps: StepActivities, user_repo: Path, tmp_path: Path) -> None:
    inp = await step_input(steps, user_repo, tmp_path, "echo ran > ran.txt")
    inp = replace(inp, policy=AutofixPolicy(), retry_budget=3)
    with transaction(steps.sessions) as s:
        chaos_rows.put_scope(s, ChaosScope(tenant_id="t", run_id="r1", probability=1.0,
                                           weights={"transient_error": 1.0}, steps=[], max_attempt=1))
    injected, recovered = (REGISTRY.get_sample_value(f"metabuilder_chaos_{n}_total", {"type": "transient_error"}) or 0
                           for n in ("injections", "recoveries"))
    with pytest.raises(ApplicationError) as err:
        await attempt(1).run(steps.run_step, inp)
    assert err.value.type == "TRANSIENT" and not err.value.non_retryable
    assert REGISTRY.get_sample_value("metabuilder_chaos_injections_total", {"type": "transient_error"}) == injected + 1
    assert err.value.next_retry_delay is not None and err.value.next_retry_delay.total_seconds() == 1.0
    assert "503" in (tmp_path / "artifacts" / "r1" / "000-s" / "attempt-1.log").read_text()
    with transaction(steps.sessions) as s:
        [event] = chaos_rows.events(s, run_id="r1")
        assert (event.fault_type, event.attempt, event.outcome, event.expected_class) == (
            "transient_error", 1, "pending", "TRANSIENT")
    result = await attempt(2).run(steps.run_step, inp)
    assert result.exit_code == 0 and result.changed_files == ["ran.txt"]
    assert rows(steps) == [(1, "failed"), (2, "succeeded")]
    with transaction(steps.sessions) as s:
        [event] = chaos_rows.events(s, run_id="r1")
        assert (event.outcome, event.recovered_attempt) == ("recovered", 2)
        assert event.recovery_seconds is not None and event.recovery_seconds > 0
    assert REGISTRY.get_sample_value("metabuilder_chaos_recoveries_total", {"type": "transient_error"}) == recovered + 1


async def test_without_a_scope_nothing_is_injected(
        steps: StepActivities, user_repo: Path, tmp_path: Path) -> None:
    inp = await step_input(steps, user_repo, tmp_path, "true")
    assert (await attempt(1).run(steps.run_step, inp)).exit_code == 0
    with transaction(steps.sessions) as s:
        assert chaos_rows.events(s) == []


@pytest.mark.parametrize(("env", "message"), [
    ({"META_V4_CHAOS_ENABLED": "true", "META_BUILDER_ENV": "production"}, "refused in the production"),
    ({"META_V4_CHAOS_WEIGHTS": "latency=x"}, "META_V4_CHAOS_WEIGHTS"),
    ({"META_V4_CHAOS_INJECTION_PROBABILITY": "2"}, "META_V4_CHAOS_INJECTION_PROBABILITY='2': expected a probability"),
    ({"META_V4_CHAOS_INJECTION_PROBABILITY": "often"}, "'often': expected a probability from 0 to 1"),
    ({"META_V4_CHAOS_RETENTION_DAYS": "0"}, "META_V4_CHAOS_RETENTION_DAYS"),
])
def test_bad_chaos_settings_fail_at_start_up_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_chaos_is_off_by_default_and_forced_in_production_only_on_purpose() -> None:
    assert not Settings.from_env({}).chaos.enabled
    forced = Settings.from_env({"META_V4_CHAOS_ENABLED": "true", "META_BUILDER_ENV": "production",
                                "META_V4_CHAOS_FORCE": "true", "META_V4_CHAOS_WEIGHTS": "latency=1"}).chaos
    assert forced.enabled and forced.forced and forced.weights[FaultType.LATENCY] == 1.0
    assert forced.weights[FaultType.TRANSIENT_ERROR] == 0.0
