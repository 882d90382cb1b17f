"""The SDK's traces, kept local: turned into OpenTelemetry spans for a collector or the console.

The SDK's default trace processor uploads every run to OpenAI. ``start_traces(mode)`` replaces
it: ``otlp`` exports over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default
``http://localhost:4318``), ``console`` prints spans, ``openai`` keeps the SDK's own exporter (only
when asked for by name), ``off`` keeps traces off. Every turn's trace is grouped by its session
id (the SDK's ``group_id``), and every span carries it as ``session.id``.

Spans hold names, agents, models, timings and token counts; the messages and answers only with
``include_text`` (``SERVE_TRACE_TEXT=1``, which also sets the SDK's ``trace_include_sensitive_data``).
A small processor here rather than a packaged bridge: openinference's puts no session id on
spans, patches the SDK's tool calls and records text by default.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agents import set_trace_processors, set_tracing_disabled
from agents.tracing import Span, Trace, TracingProcessor

from multisessions.errors import ConfigError
from multisessions.observers import group_traces

SESSION_ATTRIBUTE = "session.id"
SAFE_FIELDS = (
    "name",
    "model",
    "from_agent",
    "to_agent",
    "handoffs",
    "tools",
    "output_type",
    "triggered",
    "response_id",
    "server",
    "turn",
    "agent_name",
    "sdk_span_type",
)
"""What a span may always carry: names and ids, never what a user or a model wrote."""
TEXT_FIELDS = ("input", "output", "data", "result", "mcp_data")


class OpenTelemetryProcessor(TracingProcessor):
    """The SDK's traces and spans as OpenTelemetry spans, each carrying the trace's session id."""

    def __init__(self, tracer: Any, *, include_text: bool = False) -> None:
        self.tracer = tracer
        self.include_text = include_text
        self.roots: dict[str, Any] = {}
        self.sessions: dict[str, str] = {}
        self.spans: dict[str, Any] = {}

    def on_trace_start(self, trace: Trace) -> None:
        exported = trace.export() or {}
        session = exported.get("group_id") or ""
        attributes = {SESSION_ATTRIBUTE: session, "agents.trace_id": trace.trace_id}
        self.sessions[trace.trace_id] = session
        self.roots[trace.trace_id] = self.tracer.start_span(trace.name, attributes=attributes)

    def on_trace_end(self, trace: Trace) -> None:
        self.sessions.pop(trace.trace_id, None)
        root = self.roots.pop(trace.trace_id, None)
        if root is not None:
            root.end()

    def on_span_start(self, span: Span[Any]) -> None:
        from opentelemetry.trace import set_span_in_context

        parent = self.spans.get(span.parent_id or "") or self.roots.get(span.trace_id)
        self.spans[span.span_id] = self.tracer.start_span(
            span.span_data.type,
            context=set_span_in_context(parent) if parent is not None else None,
            start_time=_nanoseconds(span.started_at),
            attributes={SESSION_ATTRIBUTE: self.sessions.get(span.trace_id, "")},
        )

    def on_span_end(self, span: Span[Any]) -> None:
        from opentelemetry.trace import Status, StatusCode

        otel = self.spans.pop(span.span_id, None)
        if otel is None:
            return
        data = span.span_data.export()
        if isinstance(data.get("data"), dict):  # the SDK's task and turn spans nest their fields
            data = {**data["data"], **{k: v for k, v in data.items() if k != "data"}}
        name = data.get("name")
        if isinstance(name, str):
            otel.update_name(f"{span.span_data.type} {name}")
        for field in SAFE_FIELDS:
            value = data.get(field)
            if value is not None:
                otel.set_attribute(f"agents.{field}", _attribute(value))
        usage = data.get("usage")
        if isinstance(usage, dict):
            for key, count in usage.items():
                if isinstance(count, int | float):
                    otel.set_attribute(f"agents.usage.{key}", count)
        if self.include_text:
            for field in TEXT_FIELDS:
                value = data.get(field)
                if value is not None:
                    otel.set_attribute(f"agents.{field}", _attribute(value))
            response_input = getattr(span.span_data, "input", None)  # a response span keeps it aside
            if response_input is not None and "input" not in data:
                otel.set_attribute("agents.input", _attribute(response_input))
            response = getattr(span.span_data, "response", None)
            if response is not None and hasattr(response, "output_text"):
                otel.set_attribute("agents.output", response.output_text)
        if span.error:
            # The error's message names what failed; its data may quote the conversation.
            otel.set_status(Status(StatusCode.ERROR, span.error.get("message", "")))
        otel.end(end_time=_nanoseconds(span.ended_at))

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass


def start_traces(mode: str, *, include_text: bool = False) -> Callable[[], None]:
    """Send this process's traces where ``mode`` says (``SERVE_TRACES``); returns the call that
    flushes them and switches traces off again."""
    if mode == "off":
        return lambda: None
    group_traces(True)
    if mode == "openai":  # the SDK's own exporter: the operator asked for it by name
        set_tracing_disabled(False)
        return _stopper(None)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as missing:
        group_traces(False)
        raise ConfigError(
            f"SERVE_TRACES={mode} needs {missing.name}; pip install -r requirements-serve.txt"
        ) from None

    exporter: SpanExporter
    if mode == "otlp":
        exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS...
    else:
        exporter = ConsoleSpanExporter(out=sys.stdout)  # the stdout of now, not of the import
    service = os.environ.get("OTEL_SERVICE_NAME") or "multisessions"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    processor = OpenTelemetryProcessor(provider.get_tracer("multisessions"), include_text=include_text)
    set_trace_processors([processor])  # in place of the SDK's default, which uploads to OpenAI
    set_tracing_disabled(False)
    return _stopper(provider)


def _stopper(provider: Any) -> Callable[[], None]:
    def stop() -> None:
        set_tracing_disabled(True)
        group_traces(False)
        if provider is not None:
            set_trace_processors([])  # never the SDK's uploading default in its place
            provider.shutdown()  # sends what is batched

    return stop


def _nanoseconds(iso: str | None) -> int | None:
    return None if iso is None else int(datetime.fromisoformat(iso).timestamp() * 1e9)


def _attribute(value: Any) -> str | bool | int | float:
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)
