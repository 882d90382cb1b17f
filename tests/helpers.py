"""Small test helpers: models we supply ourselves, built from the SDK's ScriptedModel, and a
cancelled turn start shared by the store tests."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from agents.testing import ModelStep, ScriptedModel, assistant_message

_ids = itertools.count()


def echo_model(steps: int = 200) -> ScriptedModel:
    """A model that never hands off: each call answers "noted" (with a unique message id)."""

    def reply(call: Any) -> list[Any]:
        return [assistant_message("noted", item_id=f"msg-{next(_ids)}")]

    return ScriptedModel([ModelStep.respond(reply) for _ in range(steps)])


def user_texts(model_input: Any) -> list[str]:
    """The user messages in one model call's input, in order."""
    if isinstance(model_input, str):
        return [model_input]
    return [
        item["content"] if isinstance(item["content"], str) else item["content"][0]["text"]
        for item in model_input
        if isinstance(item, dict) and item.get("role") == "user"
    ]


def reply(text: str) -> list[Any]:
    """One scripted model output: an assistant answer with a unique id."""
    return [assistant_message(text, item_id=f"msg-{next(_ids)}")]


async def cancel_a_start_in_flight(io: Any, session_id: str, batches: Any) -> None:
    """Start a turn on ``io`` and cancel its caller once its batch left (``batches``: the store's
    ``Batches``), then wait for that batch to settle: whatever it took should be given back."""
    starting = asyncio.create_task(io.begin(session_id, "gone", 30, None))
    await asyncio.sleep(0)  # queued
    await asyncio.sleep(0)  # the batch left
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await batches.close()
