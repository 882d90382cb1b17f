"""Traces, kept local: the SDK's runs reach an OTLP collector on 127.0.0.1 (a stand-in, decoded
with opentelemetry-proto) as spans carrying the session id, and no message text unless
``SERVE_TRACE_TEXT`` says so. The turns call a real model client (the stand-in OpenAI server), so
the model's own spans are there too."""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from agents import Agent, RunConfig, set_trace_processors, set_tracing_disabled
from agents.tracing import function_span, generation_span, trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from multisessions import OfflineModel, SQLiteStore, run_turn
from multisessions.tracing import SESSION_ATTRIBUTE, OpenTelemetryProcessor, start_traces
from serve_fixture import auth, serving
from standin_fixture import KEY, module_standin_fixture, standin_fixture  # noqa: F401 (fixtures)
from tools.standin_server import StandinServer

SESSION = "support_feature_user_alice"


class Collector:
    """An OTLP/HTTP collector on 127.0.0.1: keeps every request body it receives."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.bodies.append(body)
                collector.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, attributes) of every span received."""
        found = []
        for body in self.bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attributes = {
                            a.key: a.value.string_value or a.value.int_value for a in span.attributes
                        }
                        found.append((span.name, attributes))
        return found


@pytest.fixture(name="collector")
def collector_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Collector]:
    collector = Collector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    yield collector
    collector.server.shutdown()
    set_trace_processors([])


async def traced_turn(db: Any, standin: StandinServer, message: str, **more: Any) -> None:
    """One turn of Alice's ``support`` through the API, with traces sent over OTLP; the server's
    shutdown (the end of its lifespan) sends what is batched."""
    model = {"api_key": KEY, "base_url": standin.base_url, "api": "responses", "max_retries": 0}
    async with serving(db, serve_traces="otlp", **model, **more) as client:
        answer = await client.post(
            "/api/conversations/support/messages", json={"message": message}, headers=auth("alice")
        )
        assert answer.status_code == 200, answer.text


@pytest.mark.slow  # a model server and a collector
async def test_spans_carry_the_session_id_and_no_message_text(db, standin, collector):
    message = f"my card number is {uuid.uuid4().hex}"
    await traced_turn(db, standin, message)
    spans = collector.spans()
    assert collector.paths and set(collector.paths) == {"/v1/traces"}
    names = [name for name, _ in spans]
    assert "Agent workflow" in names and "agent Triage Agent" in names and "response" in names, names
    assert all(attributes[SESSION_ATTRIBUTE] == SESSION for _, attributes in spans), spans
    raw = b"".join(collector.bodies)
    assert message.encode() not in raw and b"card number" not in raw
    assert standin.requests  # the model was asked, so there was text to leave out


@pytest.mark.slow
async def test_with_serve_trace_text_the_message_is_in_the_spans(db, standin, collector):
    message = f"my card number is {uuid.uuid4().hex}"
    await traced_turn(db, standin, message, serve_trace_text=True)
    raw = b"".join(collector.bodies)
    assert message.encode() in raw
    response_spans = [attributes for name, attributes in collector.spans() if name == "response"]
    assert response_spans and all(message in attributes["agents.input"] for attributes in response_spans)


@pytest.mark.parametrize("include_text", [False, True])
def test_the_processor_keeps_text_out_even_when_the_sdk_hands_it_over(include_text):
    """The SDK gives a span its input and output when ``trace_include_sensitive_data`` is on; the
    processor still leaves them out unless it was told to keep text."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_trace_processors([OpenTelemetryProcessor(provider.get_tracer("test"), include_text=include_text)])
    set_tracing_disabled(False)
    try:
        with trace("Agent workflow", group_id="s1"):
            with generation_span(input=[{"role": "user", "content": "secret words"}], model="m") as span:
                span.span_data.output = [{"role": "assistant", "content": "secret answer"}]
            with function_span("lookup", input='{"q": "secret query"}') as tool:
                tool.span_data.output = "secret result"
    finally:
        set_tracing_disabled(True)
        set_trace_processors([])
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert set(spans) == {"Agent workflow", "generation", "function lookup"}
    assert all(attributes[SESSION_ATTRIBUTE] == "s1" for attributes in spans.values())
    assert spans["generation"]["agents.model"] == "m"
    shown = repr(spans)
    for text in ("secret words", "secret answer", "secret query", "secret result"):
        assert (text in shown) is include_text, text


async def test_console_traces_print_each_turn_grouped_by_its_session_without_its_text(db, capsys):
    store = SQLiteStore(db)
    stop = start_traces("console")
    try:
        for session_id in ("s-one", "s-two"):
            session = store.open(session_id)
            config = RunConfig(model=OfflineModel(), trace_include_sensitive_data=False)
            message = f"secret words for {session_id}"
            await run_turn(Agent(name="Support"), session, message, run_config=config)
            session.close()
    finally:
        stop()  # sends what is batched
        await store.close()
    printed = capsys.readouterr().out
    spans = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", printed, flags=re.S | re.M)]
    by_session = Counter(span["attributes"][SESSION_ATTRIBUTE] for span in spans)
    assert set(by_session) == {"s-one", "s-two"} and by_session["s-one"] == by_session["s-two"] >= 2
    assert "secret words" not in printed
