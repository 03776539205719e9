"""structlog in a fresh process: JSON in production, console in development, and the standard
library's records (the Temporal SDK's, with their context) rendered the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import logging, structlog
from metabuilder.worker.logging import configure_logging
from metabuilder.worker.settings import Settings
configure_logging(Settings.from_env())
structlog.get_logger("metabuilder.events").info("autofix.retry", run_id="r1", step_id="fetch",
    signal_type="TRANSIENT", strategy="retry", outcome="retried", attempt=2)
logging.getLogger("temporalio.activity").warning("Completing activity as failed",
    extra={"temporal_activity": {"activity_id": "000-fetch", "workflow_id": "build-run-r1"}})
"""


def run(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stderr


def test_production_writes_one_json_object_per_event_with_the_run_fields() -> None:
    lines = [json.loads(line) for line in run({"META_BUILDER_ENV": "production"}).splitlines()]
    ours, sdk = lines
    assert {k: ours[k] for k in ("event", "run_id", "step_id", "signal_type", "strategy", "outcome", "attempt")} == {
        "event": "autofix.retry", "run_id": "r1", "step_id": "fetch", "signal_type": "TRANSIENT",
        "strategy": "retry", "outcome": "retried", "attempt": 2}
    assert ours["level"] == "info" and ours["timestamp"].endswith("Z")
    assert sdk["logger"] == "temporalio.activity" and sdk["level"] == "warning"
    assert sdk["event"] == "Completing activity as failed"
    assert sdk["temporal_activity"] == {"activity_id": "000-fetch", "workflow_id": "build-run-r1"}


def test_development_writes_console_lines() -> None:
    out = run({"META_BUILDER_ENV": "development", "META_BUILDER_LOG_FORMAT": ""})
    first, second = out.splitlines()
    assert "autofix.retry" in first and "run_id=r1" in first and not first.startswith("{")
    assert "Completing activity as failed" in second and "temporal_activity=" in second
