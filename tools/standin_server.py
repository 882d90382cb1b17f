"""A stand-in OpenAI-compatible server, so tests can drive the SDK's real model classes over real HTTP.

It speaks ``POST /v1/responses`` and ``POST /v1/chat/completions`` (plain JSON and SSE streams),
``POST /v1/responses/compact`` (history compaction: one summary message) and ``GET /v1/models``,
on 127.0.0.1 only. Every model answer comes from the project's offline model, so the tutorial's
demo stories hold over HTTP: each request is turned into the Responses-style input items the SDK's
``Model`` interface gets, the offline model decides (a text answer or a ``transfer_to_...`` handoff
call), and the decision is rendered in the API's own format.

Tests read the request log and can make the server fail on purpose (see ``FAILURES``)::

    with StandinServer() as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        server.fail_next("rate_limited", api="responses")
        ...

By hand, to try the real-model path with no key and no network::

    python -m tools.standin_server --port 8089 [--api responses|chat_completions|both]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal, get_args

from agents.model_settings import ModelSettings
from agents.models.interface import ModelTracing
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
except ImportError as missing:  # the serving packages are optional: as a command, one line naming them
    if __name__ != "__main__":
        raise
    sys.exit(f"error: the stand-in server needs {missing.name}; pip install -r requirements-serve.txt")

from multisessions.offline_model import OfflineModel

Api = Literal["responses", "chat_completions"]
FailureKind = Literal[
    "unauthorized",
    "forbidden",
    "not_found",
    "rate_limited",
    "server_error",
    "context_length",
    "html",
    "malformed_json",
    "echo_key",
    "hang",
]
MODEL_ID = "standin-offline"
HANG_SECONDS = 300.0  # a hang ends earlier on reset() or stop(); this only bounds a forgotten one


# ---------------------------------------------------------------------------------------------
# Request parsing: either API's body -> the Model-interface view of the turn.
# ---------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One request, as the SDK's ``Model`` interface would have seen it."""

    model: str
    instructions: str | None
    items: list[dict[str, Any]]
    handoffs: list[SimpleNamespace]
    tools: list[SimpleNamespace] = field(default_factory=list)
    """The other function tools, as the offline model sees them (name, description, parameters)."""
    stream: bool = False
    include_usage: bool = False  # Chat Completions streams only


def _handoff(name: str, description: str | None) -> SimpleNamespace | None:
    """A handoff-like object for a ``transfer_to_...`` tool; None for any other tool."""
    if not name.startswith("transfer_to_"):
        return None
    # The SDK names the tool after the agent, so the name words are the agent name (lower case,
    # which is all choose_handoff needs: it compares lower-cased words).
    agent_name = name.removeprefix("transfer_to_").replace("_", " ")
    return SimpleNamespace(tool_name=name, agent_name=agent_name, tool_description=description or "")


def _handoffs(named_tools: Iterator[tuple[str, str | None]]) -> list[SimpleNamespace]:
    return [h for name, description in named_tools if (h := _handoff(name, description)) is not None]


def _function_tools(functions: list[dict[str, Any]]) -> list[SimpleNamespace]:
    """The function tools that are not handoffs, shaped like the SDK's ``FunctionTool``."""
    return [
        SimpleNamespace(
            name=str(f.get("name", "")),
            description=f.get("description") or "",
            params_json_schema=f.get("parameters") or {},
        )
        for f in functions
        if not str(f.get("name", "")).startswith("transfer_to_")
    ]


def parse_responses_request(body: dict[str, Any]) -> Turn:
    """A Responses API body: ``input`` is already in Model-interface item form."""
    raw_input = body.get("input")
    items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input or []
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    return Turn(
        model=str(body.get("model") or MODEL_ID),
        instructions=body.get("instructions"),
        items=[item for item in items if isinstance(item, dict)],
        handoffs=_handoffs((str(t.get("name", "")), t.get("description")) for t in tools),
        tools=_function_tools(tools),
        stream=bool(body.get("stream")),
    )


def parse_chat_request(body: dict[str, Any]) -> Turn:
    """A Chat Completions body: messages back into items, the system message into instructions."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role, content = message.get("role"), message.get("content")
        if role in ("system", "developer"):
            instructions.append(content if isinstance(content, str) else json.dumps(content))
        elif role == "user":
            items.append({"role": "user", "content": content})
        elif role == "assistant":
            if content:
                items.append({"role": "assistant", "content": content})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "name": function.get("name", ""),
                        "call_id": call.get("id", ""),
                        "arguments": function.get("arguments") or "{}",
                    }
                )
        elif role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": content}
            )
    functions = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    return Turn(
        model=str(body.get("model") or MODEL_ID),
        instructions="\n\n".join(instructions) or None,
        items=items,
        handoffs=_handoffs((str(f.get("name", "")), f.get("description")) for f in functions),
        tools=_function_tools(functions),
        stream=bool(body.get("stream")),
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
    )


# ---------------------------------------------------------------------------------------------
# Decision: the offline model, exactly as the SDK would call it in-process.
# ---------------------------------------------------------------------------------------------


@dataclass
class Reply:
    """The offline model's decision for one request, ready to render in either API's format."""

    model: str
    output: list[Any]  # ResponseOutputMessage | ResponseFunctionToolCall
    usage: Usage
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def text(self) -> str:
        return "".join(
            part.text
            for item in self.output
            if isinstance(item, ResponseOutputMessage)
            for part in item.content
            if part.type == "output_text"
        )

    @property
    def calls(self) -> list[ResponseFunctionToolCall]:
        return [item for item in self.output if isinstance(item, ResponseFunctionToolCall)]


async def decide(turn: Turn) -> Reply:
    """Ask the offline model what to answer to this turn."""
    items: Any = turn.items  # the SDK's input items, as plain dicts
    response = await OfflineModel().get_response(
        turn.instructions, items, ModelSettings(), turn.tools, None, turn.handoffs, ModelTracing.DISABLED
    )
    return Reply(model=turn.model, output=list(response.output), usage=response.usage)


def _words(text: str) -> list[str]:
    """Stream pieces: each word with its following space, so the pieces join back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _sse(event: dict[str, Any], *, named: bool) -> str:
    # The Responses API names each event; Chat Completions sends bare data lines.
    data = f"data: {json.dumps(event)}\n\n"
    return f"event: {event['type']}\n{data}" if named else data


# ---------------------------------------------------------------------------------------------
# Rendering: Responses API.
# ---------------------------------------------------------------------------------------------


def _responses_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def render_response(reply: Reply, *, status: str = "completed", with_output: bool = True) -> dict[str, Any]:
    """A Responses API ``response`` object."""
    return {
        "id": f"resp_{reply.id}",
        "object": "response",
        "created_at": reply.created,
        "status": status,
        "model": reply.model,
        "output": [item.model_dump(mode="json", exclude_none=True) for item in reply.output]
        if with_output
        else [],
        "parallel_tool_calls": False,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "temperature": None,
        "error": None,
        "incomplete_details": None,
        "metadata": {},
        "usage": _responses_usage(reply.usage) if with_output else None,
    }


def render_compaction(body: dict[str, Any]) -> dict[str, Any]:
    """A ``response.compaction`` for ``POST /v1/responses/compact``: the input as one summary message.

    OpenAI returns the user messages and one opaque compaction item; a single readable assistant
    message is enough to see, in a test, that the stored history was replaced by the compacted one.
    """
    raw_input = body.get("input")
    items: list[Any] = raw_input if isinstance(raw_input, list) else []
    summary = f"Summary of {len(items)} earlier items."
    message = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": summary, "annotations": []}],
    }
    usage = Usage(input_tokens=len(items), output_tokens=1, total_tokens=len(items) + 1)
    return {
        "id": f"cmp_{uuid.uuid4().hex[:24]}",
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [message],
        "usage": _responses_usage(usage),
    }


def _responses_events(reply: Reply) -> Iterator[dict[str, Any]]:
    """The Responses stream, in the order OpenAI sends it (sequence numbers added by the caller)."""
    yield {
        "type": "response.created",
        "response": render_response(reply, status="in_progress", with_output=False),
    }
    for index, item in enumerate(reply.output):
        done = item.model_dump(mode="json", exclude_none=True)
        if isinstance(item, ResponseFunctionToolCall):
            yield {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**done, "arguments": ""},
            }
            where = {"item_id": item.id, "output_index": index}
            yield {"type": "response.function_call_arguments.delta", **where, "delta": item.arguments}
            yield {
                "type": "response.function_call_arguments.done",
                **where,
                "name": item.name,
                "arguments": item.arguments,
            }
        else:
            added = {**done, "status": "in_progress", "content": []}
            yield {"type": "response.output_item.added", "output_index": index, "item": added}
            where = {"item_id": item.id, "output_index": index, "content_index": 0}
            empty = {"type": "output_text", "text": "", "annotations": []}
            yield {"type": "response.content_part.added", **where, "part": empty}
            text = "".join(part.text for part in item.content if part.type == "output_text")
            for word in _words(text):
                yield {"type": "response.output_text.delta", **where, "delta": word, "logprobs": []}
            yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
            yield {"type": "response.content_part.done", **where, "part": {**empty, "text": text}}
        yield {"type": "response.output_item.done", "output_index": index, "item": done}
    yield {"type": "response.completed", "response": render_response(reply)}


async def stream_response(reply: Reply) -> AsyncIterator[str]:
    """Responses API server-sent events."""
    for number, event in enumerate(_responses_events(reply)):
        yield _sse({**event, "sequence_number": number}, named=True)


# ---------------------------------------------------------------------------------------------
# Rendering: Chat Completions.
# ---------------------------------------------------------------------------------------------


def _chat_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _finish_reason(reply: Reply) -> str:
    return "tool_calls" if reply.calls else "stop"


def _tool_call(call: ResponseFunctionToolCall) -> dict[str, Any]:
    return {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def render_chat_completion(reply: Reply) -> dict[str, Any]:
    """A Chat Completions ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.calls:
        message["tool_calls"] = [_tool_call(call) for call in reply.calls]
    return {
        "id": f"chatcmpl-{reply.id}",
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": _finish_reason(reply), "logprobs": None}
        ],
        "usage": _chat_usage(reply.usage),
    }


def _chat_chunks(reply: Reply) -> Iterator[dict[str, Any]]:
    """The deltas of a chat stream: role, then words or tool calls, then the finish reason."""
    yield {"role": "assistant", "content": ""}
    for word in _words(reply.text):
        yield {"content": word}
    for index, call in enumerate(reply.calls):
        # Name first, arguments after, as OpenAI streams them: the SDK has to join the pieces.
        opening = {"index": index, "id": call.call_id, "type": "function"}
        yield {"tool_calls": [{**opening, "function": {"name": call.name, "arguments": ""}}]}
        yield {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]}


async def stream_chat_completion(reply: Reply, *, include_usage: bool) -> AsyncIterator[str]:
    """Chat Completions server-sent events, ending with ``[DONE]``."""
    envelope = {
        "id": f"chatcmpl-{reply.id}",
        "object": "chat.completion.chunk",
        "created": reply.created,
        "model": reply.model,
    }
    # With include_usage, OpenAI sends "usage": null on every chunk and the figures on a last,
    # choice-less chunk.
    extra = {"usage": None} if include_usage else {}
    for delta in _chat_chunks(reply):
        choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        yield _sse({**envelope, "choices": [choice], **extra}, named=False)
    finish = {"index": 0, "delta": {}, "finish_reason": _finish_reason(reply), "logprobs": None}
    yield _sse({**envelope, "choices": [finish], **extra}, named=False)
    if include_usage:
        yield _sse({**envelope, "choices": [], "usage": _chat_usage(reply.usage)}, named=False)
    yield "data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------
# Failure modes: what a test can make the server answer instead.
# ---------------------------------------------------------------------------------------------


def openai_error(
    status: int,
    message: str,
    type_: str,
    code: str | int | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


CONTEXT_LENGTH_MESSAGE = (
    "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    "131072 tokens. Please reduce the length of the messages."
)

# kind -> the answer, given the API key the client sent (only "echo_key" uses it). "hang" is not
# here: it answers nothing at all (see StandinServer._hang).
FAILURES: dict[str, Callable[[str], Response]] = {
    "unauthorized": lambda key: openai_error(
        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
    ),
    "forbidden": lambda key: openai_error(
        403,
        "Country, region, or territory not supported",
        "request_forbidden",
        "unsupported_country_region_territory",
    ),
    "not_found": lambda key: openai_error(
        404,
        "The model does not exist or you do not have access to it.",
        "invalid_request_error",
        "model_not_found",
    ),
    # Retry-After: 0 alone makes the openai client fall back to its own backoff (about half a
    # second); retry-after-ms, which it prefers, makes the retry immediate.
    "rate_limited": lambda key: openai_error(
        429,
        "Rate limit reached for requests. Please try again in 0s.",
        "requests",
        "rate_limit_exceeded",
        headers={"Retry-After": "0", "retry-after-ms": "1"},
    ),
    "server_error": lambda key: openai_error(
        500, "The server had an error while processing your request. Sorry about that!", "server_error"
    ),
    "context_length": lambda key: openai_error(
        400, CONTEXT_LENGTH_MESSAGE, "invalid_request_error", "context_length_exceeded"
    ),
    # A captive portal or a misconfigured proxy: a 200 that is not the API at all.
    "html": lambda key: HTMLResponse("<!doctype html><html><body><h1>Welcome</h1></body></html>"),
    "malformed_json": lambda key: Response(
        '{"id": "resp_broken", "output": [', media_type="application/json"
    ),
    # A careless server that quotes the secret back: clients must never print error messages raw.
    "echo_key": lambda key: openai_error(
        401, f"Incorrect API key provided: {key}.", "invalid_request_error", "invalid_api_key"
    ),
}
assert set(FAILURES) | {"hang"} == set(get_args(FailureKind)), "every failure kind needs an answer"


def llama_cpp_rejection() -> JSONResponse:
    """A llama.cpp-style 500 for an assistant tool-call message with null content (our wording)."""
    message = (
        "Failed to parse messages: assistant message 'content' must be a string or an array of "
        "content parts (got null) when 'tool_calls' is present"
    )
    return JSONResponse({"error": {"code": 500, "message": message, "type": "server_error"}}, status_code=500)


def _tool_call_without_content(body: dict[str, Any]) -> bool:
    return any(
        isinstance(m, dict)
        and m.get("role") == "assistant"
        and m.get("tool_calls")
        and m.get("content") is None
        for m in body.get("messages") or []
    )


# ---------------------------------------------------------------------------------------------
# The server.
# ---------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as the server received it. ``headers`` stays out of repr: it holds the key."""

    method: str
    path: str
    api: Api | None
    body: Any
    headers: dict[str, str] = field(repr=False)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass
class _Planned:
    kind: str
    api: Api | Literal["any"]
    remaining: int | None  # None: every request, until reset()


class StandinServer:
    """The stand-in OpenAI server on 127.0.0.1, run by uvicorn in a background thread."""

    def __init__(
        self,
        *,
        port: int = 0,
        only: Api | None = None,
        reject_null_tool_call_content: bool = False,
    ) -> None:
        self._port = port
        self._defaults = (only, reject_null_tool_call_content)
        self.only: Api | None = only  # the other API answers 404, like llama.cpp for /v1/responses
        self.reject_null_tool_call_content = reject_null_tool_call_content  # llama.cpp's chat template
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._plan: list[_Planned] = []
        self._thread: threading.Thread | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hangs_released: asyncio.Event | None = None
        self.app = self._build_app()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give ``AsyncOpenAI(base_url=...)``, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        if self._thread is None:
            raise RuntimeError("the stand-in server is not running")
        return self._port

    def start(self, timeout: float = 5.0) -> StandinServer:
        """Bind 127.0.0.1 (port 0: a free one), serve in a thread, return once it accepts requests."""
        if self._thread is not None:
            return self
        # Binding here, not in uvicorn, tells us the real port at once and fails loudly if taken.
        # proto must be IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY on accepted sockets
        # only then, and without it every POST stalls 40 ms on Nagle plus delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
        self._uvicorn = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(sock),), name=f"standin-server-{self._port}"
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the stand-in server did not start")
            time.sleep(0.01)
        return self

    async def _serve(self, sock: socket.socket) -> None:
        assert self._uvicorn is not None
        self._loop = asyncio.get_running_loop()
        self._hangs_released = asyncio.Event()
        try:
            await self._uvicorn.serve(sockets=[sock])
        finally:
            sock.close()

    def stop(self) -> None:
        """Release any hung request, shut uvicorn down and join its thread (a second or so)."""
        if self._thread is None:
            return
        self._release_hangs()
        assert self._uvicorn is not None
        self._uvicorn.should_exit = True
        self._thread.join(timeout=5)
        self._thread, self._uvicorn, self._loop = None, None, None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> StandinServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- what tests read and control ------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received since start or the last reset(), oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def reset(self) -> None:
        """Forget the log and planned failures, release hung requests, restore the start-up modes."""
        with self._lock:
            self._log.clear()
            self._plan.clear()
        self.only, self.reject_null_tool_call_content = self._defaults
        self._release_hangs()

    def fail_next(self, kind: FailureKind, *, api: Api | Literal["any"] = "any", times: int = 1) -> None:
        """Answer the next ``times`` requests to ``api`` (or either API) with failure ``kind``."""
        self._add_plan(_Planned(kind, api, times))

    def fail_always(self, kind: FailureKind, *, api: Api | Literal["any"] = "any") -> None:
        """Answer every request to ``api`` (or either API) with failure ``kind``, until reset()."""
        self._add_plan(_Planned(kind, api, None))

    def _add_plan(self, planned: _Planned) -> None:
        if planned.kind not in get_args(FailureKind):
            raise ValueError(f"unknown failure kind {planned.kind!r}; one of {get_args(FailureKind)}")
        with self._lock:
            self._plan.append(planned)

    def _take_failure(self, api: Api) -> str | None:
        with self._lock:
            for planned in self._plan:
                if planned.api in (api, "any"):
                    if planned.remaining is not None:
                        planned.remaining -= 1
                        if planned.remaining <= 0:
                            self._plan.remove(planned)
                    return planned.kind
        return None

    def _release_hangs(self) -> None:
        loop, event = self._loop, self._hangs_released
        if loop is None or event is None or loop.is_closed():
            return

        def release() -> None:
            # Hung handlers wait on the old event; later hangs get a fresh one.
            event.set()
            self._hangs_released = asyncio.Event()

        try:
            loop.call_soon_threadsafe(release)
        except RuntimeError:  # the loop closed between the check and the call
            pass

    # -- HTTP -----------------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="stand-in OpenAI API", docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/v1/responses")
        async def responses(request: Request) -> Response:
            return await self._handle(request, "responses")

        @app.post("/v1/responses/compact")
        async def compact(request: Request) -> Response:
            body = await self._record(request, "responses")
            return JSONResponse(render_compaction(body if isinstance(body, dict) else {}))

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> Response:
            return await self._handle(request, "chat_completions")

        @app.get("/v1/models")
        async def models(request: Request) -> dict[str, Any]:
            await self._record(request, None)
            return {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "standin"}],
            }

        return app

    async def _record(self, request: Request, api: Api | None) -> Any:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        entry = RecordedRequest(request.method, request.url.path, api, body, dict(request.headers))
        with self._lock:
            self._log.append(entry)
        return body

    async def _handle(self, request: Request, api: Api) -> Response:
        body = await self._record(request, api)
        if self.only is not None and api != self.only:
            return openai_error(404, f"File Not Found: {request.url.path}", "not_found_error", 404)
        kind = self._take_failure(api)
        if kind == "hang":
            return await self._hang()
        if kind is not None:
            key = request.headers.get("authorization", "").removeprefix("Bearer ")
            return FAILURES[kind](key)
        if not isinstance(body, dict):
            return openai_error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
        if (
            api == "chat_completions"
            and self.reject_null_tool_call_content
            and _tool_call_without_content(body)
        ):
            return llama_cpp_rejection()

        turn = parse_responses_request(body) if api == "responses" else parse_chat_request(body)
        reply = await decide(turn)
        if api == "responses":
            if turn.stream:
                return StreamingResponse(stream_response(reply), media_type="text/event-stream")
            return JSONResponse(render_response(reply))
        if turn.stream:
            events = stream_chat_completion(reply, include_usage=turn.include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        return JSONResponse(render_chat_completion(reply))

    async def _hang(self) -> Response:
        """Accept the request and answer nothing until reset(), stop() or HANG_SECONDS."""
        assert self._hangs_released is not None
        try:
            await asyncio.wait_for(self._hangs_released.wait(), HANG_SECONDS)
        except TimeoutError:
            pass
        # Nobody is usually listening any more; this just lets the connection close.
        return openai_error(503, "The stand-in server stopped hanging.", "server_error")


def main(argv: list[str] | None = None) -> None:
    """Serve until Ctrl-C, after printing the base URL to use."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.standin_server",
        description="A stand-in OpenAI-compatible server on 127.0.0.1, answering with the offline model.",
    )
    parser.add_argument("--port", type=int, default=8089, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--api", choices=["responses", "chat_completions", "both"], default="both")
    args = parser.parse_args(argv)
    with StandinServer(port=args.port, only=None if args.api == "both" else args.api) as server:
        print(f"OPENAI_BASE_URL={server.base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
