"""Which model answers: a real OpenAI-compatible model when a key is configured, else offline.

``OPENAI_API_KEY`` (environment or ``.env``, see settings.py) switches on the real model;
``OPENAI_MODEL`` names it, ``OPENAI_BASE_URL`` points at any OpenAI-compatible server and
``OPENAI_API`` chooses the Responses or the Chat Completions API. With no key, or with
``--offline``, the demos run on ``OfflineModel`` and say so in one line.

Each call of ``resolve_model`` builds its own ``AsyncOpenAI`` client, bound to the event loop
that uses it: the SDK's shared default client keeps connections of the first loop and fails
with "Event loop is closed" in the next one. The client waits ``OPENAI_TIMEOUT`` seconds per
try and tries ``OPENAI_MAX_RETRIES`` more times on timeouts, connection errors, 429 and 5xx;
an answer that is not the API's JSON fails at once, as ``openai.APIResponseValidationError``.

The client's timeout bounds each read, not the call: a server that sends a byte now and then
would hold a turn for ever. ``WithDeadline`` ends every call at ``Settings.call_deadline``
(``(OPENAI_MAX_RETRIES + 1) x OPENAI_TIMEOUT`` plus the backoff between tries) and, inside
``turn_deadline(seconds)``, all of a turn's calls together at that many seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx2
from agents import ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, set_tracing_disabled
from agents.items import ModelResponse, TResponseStreamEvent
from agents.models.interface import Model
from openai import APIResponseValidationError, AsyncOpenAI, DefaultAsyncHttpxClient

from multisessions.errors import AnswerTooLong, ModelTimeout
from multisessions.offline_model import OfflineModel
from multisessions.settings import Settings, load_settings

if TYPE_CHECKING:
    from multisessions.sdk_private import FinalRequestOptions

ModelLike = Model | str | None


def resolve_model(
    model: ModelLike = None, settings: Settings | None = None, *, announce: bool = True
) -> Model:
    """The model for ``RunConfig(model=...)``: a ``Model`` as given; else one built from settings.

    A string names the model (as ``OPENAI_MODEL`` does). Prints one line saying which model
    answers unless ``announce`` is false.
    """
    if isinstance(model, Model):
        return model
    # Traces would upload every conversation to OpenAI; this tutorial keeps them off everywhere.
    set_tracing_disabled(True)
    settings = load_settings() if settings is None else settings
    if isinstance(model, str):
        settings = replace(settings, model=model)
    if announce:
        print(describe_model(settings, named=isinstance(model, str)))
    if settings.uses_offline_model:
        return OfflineModel()
    real: Model
    if settings.api == "chat_completions":
        real = OpenAIChatCompletionsModel(settings.model, openai_client=model_client(settings))
    else:
        real = OpenAIResponsesModel(settings.model, openai_client=model_client(settings))
    if settings.max_tokens is not None:
        real = WithModelSettings(real, ModelSettings(max_tokens=settings.max_tokens))
    return WithDeadline(real, settings.call_deadline, max_chars=settings.max_answer_chars)


def model_client(settings: Settings) -> AsyncOpenAI:
    """A fresh client for this event loop: bounded tries, answers checked, history every server reads."""
    client_class = ChatCompletionsClient if settings.api == "chat_completions" else AsyncOpenAI
    return client_class(
        api_key=settings.api_key,
        base_url=settings.base_url or None,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
        http_client=DefaultAsyncHttpxClient(event_hooks={"response": [check_answer]}),
    )


async def check_answer(response: httpx2.Response) -> None:
    """Fail at once, in words, on a 2xx answer that is not the API's JSON or event stream.

    A captive portal's HTML page or a truncated body would otherwise surface deep in the SDK as
    ``AttributeError: 'str' object has no attribute 'usage'`` or a bare ``JSONDecodeError``.
    """
    kind = response.headers.get("content-type", "")
    if not response.is_success or response.request.method != "POST" or "event-stream" in kind:
        return
    body = (await response.aread()).decode(errors="replace")
    if "json" in kind:
        try:
            json.loads(body)
            return
        except ValueError as exc:
            problem = f"the answer is not valid JSON ({exc})"
    else:
        problem = f"the answer is {kind or 'untyped'}, not the API's JSON"
    raise APIResponseValidationError(response, body, message=f"{problem}: {body[:500]}")


class ChatCompletionsClient(AsyncOpenAI):
    """An ``AsyncOpenAI`` client that sends ``content: ""``, not ``null``, beside ``tool_calls``.

    After a handoff the SDK's converter (``agents/models/chatcmpl_converter.py``) replays the
    transfer call as ``{"role": "assistant", "content": None, "tool_calls": [...]}``. OpenAI
    accepts that; llama.cpp's server and others answer 500. An empty string means the same and
    every server reads it. ``_prepare_options`` is the client's hook for adjusting a request
    before it is sent (``AzureOpenAI`` uses it too); only the copy being sent changes.
    """

    async def _prepare_options(self, options: FinalRequestOptions) -> FinalRequestOptions:
        options = await super()._prepare_options(options)
        body = options.json_data
        if options.url == "/chat/completions" and isinstance(body, dict):
            messages = body.get("messages")
            if isinstance(messages, list) and any(map(_null_beside_tool_calls, messages)):
                fixed = [{**m, "content": ""} if _null_beside_tool_calls(m) else m for m in messages]
                options.json_data = {**body, "messages": fixed}
        return options


def _null_beside_tool_calls(message: object) -> bool:
    return (
        isinstance(message, dict)
        and message.get("role") == "assistant"
        and bool(message.get("tool_calls"))
        and message.get("content") is None
    )


def describe_model(settings: Settings, *, named: bool = False) -> str:
    """The one line saying which model answers, and why."""
    if settings.uses_offline_model:
        reason = "--offline" if settings.offline else "no OPENAI_API_KEY"
        if named:
            reason += f"; model {settings.model!r} needs a key"
        return (
            f"Model: built-in offline model ({reason}): rule-based answers from the conversation "
            "only, no network. Set OPENAI_API_KEY in .env for a real model."
        )
    where = f" at {settings.base_url}" if settings.base_url else " (OpenAI)"
    return f"Model: {settings.model}{where}, {settings.api} API"


class WithModelSettings(Model):
    """A model whose every call also carries ``extra`` settings (such as ``max_tokens``)."""

    def __init__(self, inner: Model, extra: ModelSettings) -> None:
        self.inner = inner
        self.extra = extra

    async def get_response(
        self, system_instructions: Any, input: Any, model_settings: Any, *args: Any, **kw: Any
    ) -> ModelResponse:
        settings = (model_settings or ModelSettings()).resolve(self.extra)
        return await self.inner.get_response(system_instructions, input, settings, *args, **kw)

    def stream_response(
        self, system_instructions: Any, input: Any, model_settings: Any, *args: Any, **kw: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        settings = (model_settings or ModelSettings()).resolve(self.extra)
        return self.inner.stream_response(system_instructions, input, settings, *args, **kw)


_turn_ends: ContextVar[float | None] = ContextVar("turn_ends", default=None)


@contextmanager
def turn_deadline(seconds: float) -> Iterator[None]:
    """Inside this block, the model calls of a turn together end after ``seconds`` (``WithDeadline``).

    A context variable: the SDK's streamed run copies it into the task it starts."""
    token = _turn_ends.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _turn_ends.reset(token)


class WithDeadline(Model):
    """A model whose every call ends within ``seconds`` in total (and within the turn's deadline),
    raising ``ModelTimeout``, however slowly the server sends its answer; an answer longer than
    ``max_chars`` (text and tool arguments) raises ``AnswerTooLong``, a stream as soon as it is."""

    def __init__(self, inner: Model, seconds: float, *, max_chars: int | None = None) -> None:
        self.inner = inner
        self.seconds = seconds
        self.max_chars = max_chars

    def _check_size(self, chars: int) -> None:
        if self.max_chars is not None and chars > self.max_chars:
            raise AnswerTooLong(
                f"the model's answer is longer than MAX_ANSWER_CHARS ({self.max_chars:,} characters); "
                "nothing was saved. Fix: ask for a shorter answer, cap answers with OPENAI_MAX_TOKENS, "
                "or raise MAX_ANSWER_CHARS"
            )

    def _ends(self) -> tuple[float, str]:
        call_ends = time.monotonic() + self.seconds
        turn_ends = _turn_ends.get()
        if turn_ends is not None and turn_ends < call_ends:
            return turn_ends, "the turn's model calls took longer than OPENAI_TURN_TIMEOUT allows"
        return call_ends, f"the model call took longer than {self.seconds:g} s in total"

    @staticmethod
    def _timeout(why: str) -> ModelTimeout:
        return ModelTimeout(
            f"{why}; nothing was saved. Fix: check that the model server answers at its normal pace, "
            "or raise OPENAI_TIMEOUT (each call ends within (OPENAI_MAX_RETRIES + 1) x OPENAI_TIMEOUT "
            "plus backoff), or run offline with --offline"
        )

    async def get_response(self, *args: Any, **kw: Any) -> ModelResponse:
        ends, why = self._ends()
        try:
            # asyncio.timeout, not wait_for: the call stays in this task, with its context (the
            # SDK's tracing spans are context variables set and reset across awaits).
            async with asyncio.timeout(max(0.0, ends - time.monotonic())):
                response = await self.inner.get_response(*args, **kw)
        except TimeoutError:
            raise self._timeout(why) from None
        self._check_size(sum(_chars(item) for item in response.output))
        return response

    async def stream_response(self, *args: Any, **kw: Any) -> AsyncIterator[TResponseStreamEvent]:
        ends, why = self._ends()
        events = aiter(self.inner.stream_response(*args, **kw))
        streamed = 0
        try:
            while True:
                try:
                    # Each wait ends at the deadline (time between events counts too); the
                    # timeout covers only the wait, never the consumer's code between events.
                    async with asyncio.timeout(max(0.0, ends - time.monotonic())):
                        event = await anext(events)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise self._timeout(why) from None
                delta = getattr(event, "delta", None)
                if isinstance(delta, str):  # text and tool-argument deltas, counted as they come
                    streamed += len(delta)
                    self._check_size(streamed)
                response = getattr(event, "response", None)
                if getattr(event, "type", "") == "response.completed" and response is not None:
                    self._check_size(sum(_chars(item) for item in response.output))
                yield event
        finally:
            closing = getattr(events, "aclose", None)
            if closing is not None:
                await closing()


def _chars(item: Any) -> int:
    """The characters an output item carries: its text parts and its tool call's arguments."""
    parts = getattr(item, "content", None)
    text = sum(len(getattr(p, "text", "") or "") for p in parts) if isinstance(parts, list) else 0
    arguments = getattr(item, "arguments", None)
    return text + (len(arguments) if isinstance(arguments, str) else 0)
