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
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx2
from agents import ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, set_tracing_disabled
from agents.items import ModelResponse, TResponseStreamEvent
from agents.models.interface import Model
from openai import APIResponseValidationError, AsyncOpenAI, DefaultAsyncHttpxClient

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
    return real


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
