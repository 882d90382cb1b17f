"""Which model answers: a real OpenAI-compatible model when a key is configured, else offline.

``OPENAI_API_KEY`` (environment or ``.env``, see settings.py) switches on the real model;
``OPENAI_MODEL`` names it, ``OPENAI_BASE_URL`` points at any OpenAI-compatible server and
``OPENAI_API`` chooses the Responses or the Chat Completions API. With no key, or with
``--offline``, the demos run on ``OfflineModel`` and say so in one line.

Each call of ``resolve_model`` builds its own ``AsyncOpenAI`` client, bound to the event loop
that uses it: the SDK's shared default client keeps connections of the first loop and fails
with "Event loop is closed" in the next one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from agents import ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, set_tracing_disabled
from agents.items import ModelResponse, TResponseStreamEvent
from agents.models.interface import Model
from openai import AsyncOpenAI

from multisessions.offline_model import OfflineModel
from multisessions.settings import Settings, load_settings

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
    client = AsyncOpenAI(
        api_key=settings.api_key,
        base_url=settings.base_url or None,
        timeout=settings.timeout,
        max_retries=settings.max_retries,
    )
    real: Model
    if settings.api == "chat_completions":
        real = OpenAIChatCompletionsModel(model=settings.model, openai_client=client)
    else:
        real = OpenAIResponsesModel(model=settings.model, openai_client=client)
    if settings.max_tokens is not None:
        real = WithModelSettings(real, ModelSettings(max_tokens=settings.max_tokens))
    return real


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


def describe_failure(exc: BaseException) -> str:
    """One line saying what failed in a model call and what to do about it."""
    name = type(exc).__name__
    text = (str(exc).splitlines()[0] if str(exc) else name).rstrip(".")
    hints: dict[str, str] = {
        "AuthenticationError": "check OPENAI_API_KEY (in the environment or .env)",
        "OpenAIError": "set OPENAI_API_KEY (in the environment or .env)",
        "PermissionDeniedError": "check that the key may use this model",
        "NotFoundError": "check OPENAI_MODEL and OPENAI_BASE_URL",
        "RateLimitError": "wait and retry, or check the account's quota",
        "APIConnectionError": "check the network and OPENAI_BASE_URL",
        "APITimeoutError": "check the network and OPENAI_BASE_URL",
    }
    hint = hints.get(name, "see the message above")
    return f"{name}: {text}. Fix: {hint}, or run offline with --offline."
