"""Optional OpenTelemetry tracing: a span for each run start, workflow task, child and activity,
through the Temporal SDK's own interceptor (``temporalio.contrib.opentelemetry``).

Off unless ``META_BUILDER_TRACING`` is ``otlp`` (spans to the OTLP endpoint named by the standard
``OTEL_EXPORTER_OTLP_*`` variables) or ``console`` (spans printed, for debugging). Needs the
``tracing`` extra: ``pip install 'meta-builder[tracing]'``.
"""

from __future__ import annotations

import importlib.util
import os
from enum import StrEnum
from typing import Any

PASSTHROUGH_MODULES = ("opentelemetry",)
"""Imported by the interceptor inside workflow code: passed through the workflow sandbox."""


class TracingMode(StrEnum):
    OFF = "off"
    OTLP = "otlp"
    CONSOLE = "console"


REQUIRED_MODULES = {
    TracingMode.OFF: (),
    TracingMode.CONSOLE: ("opentelemetry.sdk",),
    TracingMode.OTLP: ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}

_configured = False


def missing_modules(mode: TracingMode) -> list[str]:
    """The modules ``mode`` needs that are not installed."""
    return [name for name in REQUIRED_MODULES[mode] if not _installed(name)]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def configure(mode: TracingMode) -> None:
    """Install a tracer provider exporting to ``mode``, once per process, unless the process
    already has one (set by an embedding application or a test)."""
    global _configured
    if mode is TracingMode.OFF or _configured:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    _configured = True
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    exporter: SpanExporter
    if mode is TracingMode.OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME")
                                                        or "metabuilder"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def interceptors(mode: TracingMode) -> list[Any]:
    """The client interceptors for ``mode`` (workers built on the client use them too)."""
    if mode is TracingMode.OFF:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    configure(mode)
    return [TracingInterceptor()]
