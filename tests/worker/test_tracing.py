"""With META_BUILDER_TRACING on, a run leaves OpenTelemetry spans from the client to its steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.orm import Session, sessionmaker

from metabuilder.domain.runs import RunStatus
from metabuilder.service.runs import SubmitOptions, submit
from metabuilder.telemetry.tracing import TracingMode
from metabuilder.worker.runtime import POOLS, build_workers, connect, running_workers
from metabuilder.worker.settings import Settings, SettingsError


async def test_a_traced_run_has_spans_for_its_start_workflow_and_steps(
        settings: Settings, sessions: sessionmaker[Session], user_repo: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # what an application embedding Meta-Builder would do

    traced = replace(settings, tracing=TracingMode.CONSOLE)
    client = await connect(traced)
    opts = SubmitOptions.of(traced)
    async with running_workers(build_workers(client, traced, sessions, POOLS)):
        submitted = await submit(client, "name: traced\nsteps:\n  - name: hello\n    command: echo hi\n",
                                 "plan.yaml", user_repo, opts)
        view = await submitted.handle.result()
    assert view.status is RunStatus.SUCCEEDED

    names = {span.name for span in exporter.get_finished_spans()}
    assert {"StartWorkflow:BuildRunWorkflow", "RunWorkflow:BuildRunWorkflow", "StartActivity:run_step",
            "RunActivity:run_step"} <= names, names
    run_spans = [s for s in exporter.get_finished_spans() if s.name == "RunActivity:run_step"]
    start = next(s for s in exporter.get_finished_spans() if s.name == "StartWorkflow:BuildRunWorkflow")
    assert all(s.context.trace_id == start.context.trace_id for s in run_spans)  # one trace per run


def test_tracing_off_by_default_and_a_bad_mode_is_named() -> None:
    assert Settings.from_env({}).tracing is TracingMode.OFF
    with pytest.raises(SettingsError, match=r"META_BUILDER_TRACING='jaeger': expected one of off, otlp, console"):
        Settings.from_env({"META_BUILDER_TRACING": "jaeger"})
