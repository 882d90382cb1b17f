"""History passed by hand (multisessions/direct.py): the same model input and the same stored
items as the SDK's session path, turn by turn, and the session path wherever they could differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from agents import (
    Agent,
    FunctionTool,
    RunConfig,
    SessionSettings,
    SQLiteSession,
    function_tool,
    handoff,
)
from agents.handoffs import Handoff, HandoffInputData
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

import multisessions.turns as turns
from conftest import needs_sdk_private
from multisessions import read_all
from multisessions.direct import can_pass_history
from multisessions.turns import run_turn, stream_turn

# History passed by hand is built from the SDK's private helpers; without them (as on a future SDK,
# or with --hide-sdk-private) every turn takes the session path, tested by tests/test_sdk_private.py.
pytestmark = needs_sdk_private()


@function_tool
def lookup_order(order: int) -> str:
    """The status of an order."""
    return f"order {order} shipped"


@function_tool(needs_approval=True)
def refund(order: int) -> str:
    """Refund an order (a supervisor approves it first)."""
    return f"order {order} refunded"


def say(text: str, item_id: str) -> ModelStep:
    return ModelStep(output=[assistant_message(text, item_id=item_id)])


def call(name: str, arguments: dict[str, Any], call_id: str) -> ModelStep:
    return ModelStep(output=[function_call(name, arguments, call_id=call_id)])


BILLING = Agent(name="Billing Agent", instructions="Answer billing questions.")
# A turn runs on the agent that answered the last one: from refunds, a bill question goes on.
REFUNDS = Agent(
    name="Refund Agent", instructions="Refund orders.", tools=[lookup_order], handoffs=[handoff(BILLING)]
)
TRIAGE = Agent(
    name="Triage Agent",
    instructions="Route the customer.",
    tools=[lookup_order],
    handoffs=[REFUNDS, handoff(BILLING)],
)
TO_REFUNDS = Handoff.default_tool_name(REFUNDS)
TO_BILLING = Handoff.default_tool_name(BILLING)

# Each conversation: (message, the model's steps for that turn), one tuple per turn.
CONVERSATIONS: dict[str, list[tuple[str, list[ModelStep]]]] = {
    "text": [
        ("Hi, I'm Ada.", [say("Hello Ada.", "m1")]),
        ("What's my name?", [say("Ada.", "m2")]),
        ("Thanks!", [say("Welcome.", "m3")]),
    ],
    "tool calls": [
        ("Where is order 7?", [call("lookup_order", {"order": 7}, "c1"), say("Shipped.", "m1")]),
        (
            "And orders 8 and 9?",
            [
                ModelStep(
                    output=[
                        function_call("lookup_order", {"order": 8}, call_id="c2"),
                        function_call("lookup_order", {"order": 9}, call_id="c3"),
                    ]
                ),
                say("Both shipped.", "m2"),
            ],
        ),
        ("Thanks.", [say("Welcome.", "m3")]),
    ],
    "handoffs": [
        (
            "I want a refund for order 7.",
            [call(TO_REFUNDS, {}, "h1"), call("lookup_order", {"order": 7}, "c1"), say("Refunded.", "m1")],
        ),
        ("And a bill question.", [call(TO_BILLING, {}, "h2"), say("Here is your bill.", "m2")]),
        ("Who are you?", [say("Billing.", "m3")]),
    ],
}


def expected_items(name: str) -> int:
    """Items a whole conversation stores: each message, each model output, an output per call."""
    outputs = [item for _, steps in CONVERSATIONS[name] for step in steps for item in step.output]
    calls = [item for item in outputs if getattr(item, "type", None) == "function_call"]
    return len(CONVERSATIONS[name]) + len(outputs) + len(calls)


async def converse(
    tmp_path: Any,
    name: str,
    *,
    by_hand: bool,
    monkeypatch: pytest.MonkeyPatch,
    cap: int | None = None,
    streamed: bool = False,
) -> tuple[list[Any], list[Any], int]:
    """Run one conversation; returns every model call's input, what the session holds, and how
    many turns took the hand-passed path."""
    script = CONVERSATIONS[name]
    model = ScriptedModel([step for _, steps in script for step in steps])
    config = RunConfig(model=model, session_settings=SessionSettings(limit=cap) if cap else None)
    passed = 0
    original = turns.model_input

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal passed
        passed += 1
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(turns, "model_input", counting)
        if not by_hand:
            patch.setattr(turns, "_passes_history", lambda *args: False)
        session = SQLiteSession(f"user_{name.replace(' ', '_')}", tmp_path / f"{by_hand}-{streamed}.db")
        try:
            for message, _ in script:
                if streamed:
                    async with stream_turn(TRIAGE, session, message, run_config=config) as result:
                        async for _event in result.stream_events():
                            pass
                else:
                    await run_turn(TRIAGE, session, message, run_config=config)
            stored = await read_all(session)
        finally:
            session.close()
    model.assert_complete()
    return [call.input for call in model.calls], stored, passed


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "streamed"])
async def test_the_model_sees_and_the_session_keeps_what_the_sdk_session_path_gives(
    tmp_path, monkeypatch, name, streamed
):
    by_sdk = await converse(tmp_path, name, by_hand=False, monkeypatch=monkeypatch, streamed=streamed)
    by_hand = await converse(tmp_path, name, by_hand=True, monkeypatch=monkeypatch, streamed=streamed)
    turns_run = len(CONVERSATIONS[name])
    assert (by_sdk[2], by_hand[2]) == (0, turns_run)  # each path really ran
    assert by_hand[0] == by_sdk[0]  # every model call's input, item by item
    assert by_hand[1] == by_sdk[1]  # every stored item, field by field
    assert len(by_hand[1]) == expected_items(name)  # every message, call and output, once


async def test_a_history_cap_cuts_the_same_window_and_drops_the_same_orphan_outputs(tmp_path, monkeypatch):
    # With 3 items, the window of the last turn starts at an output whose call fell outside it:
    # the SDK drops that output (a model rejects an output with no call), and so must we.
    by_sdk = await converse(tmp_path, "tool calls", by_hand=False, monkeypatch=monkeypatch, cap=3)
    by_hand = await converse(tmp_path, "tool calls", by_hand=True, monkeypatch=monkeypatch, cap=3)
    assert by_hand[2] == 3 and by_hand[0] == by_sdk[0] and by_hand[1] == by_sdk[1]
    last_input = by_hand[0][-1]
    assert len(last_input) < 4  # 3 stored items at most, less the orphan, plus the message
    calls = {item.get("call_id") for item in last_input if item.get("type") == "function_call"}
    outputs = {item.get("call_id") for item in last_input if item.get("type") == "function_call_output"}
    assert outputs <= calls


def _filter(data: HandoffInputData) -> HandoffInputData:
    return data


DISQUALIFIED: dict[str, Callable[[], tuple[Agent[Any], dict[str, Any]]]] = {
    "a tool that asks for approval": lambda: (Agent(name="A", tools=[refund]), {}),
    "such a tool behind a handoff": lambda: (
        Agent(name="A", handoffs=[Agent(name="B", handoffs=[Agent(name="C", tools=[refund])])]),
        {},
    ),
    "a handoff that filters the history": lambda: (
        Agent(name="A", handoffs=[handoff(Agent(name="B"), input_filter=_filter)]),
        {},
    ),
    "an agent as a tool": lambda: (Agent(name="A", tools=[Agent(name="B").as_tool("b", "b")]), {}),
    "a session input callback": lambda: (
        Agent(name="A"),
        {"run_config": RunConfig(session_input_callback=lambda history, new: history + new)},
    ),
    "a reasoning id policy": lambda: (
        Agent(name="A"),
        {"run_config": RunConfig(reasoning_item_id_policy="omit")},
    ),
    "nested handoff history": lambda: (Agent(name="A"), {"run_config": RunConfig(nest_handoff_history=True)}),
    "a server-kept conversation": lambda: (Agent(name="A"), {"previous_response_id": "resp_1"}),
}


@pytest.mark.parametrize("why", sorted(DISQUALIFIED))
def test_turns_that_could_differ_keep_the_sdk_session_path(tmp_path, why):
    session = SQLiteSession("user_1", tmp_path / "a.db")
    assert can_pass_history(
        Agent(name="A"), session, {"run_config": RunConfig(), "max_turns": 3}
    )  # the control
    agent, kwargs = DISQUALIFIED[why]()
    assert not can_pass_history(agent, session, kwargs)
    session.close()


def test_a_plain_function_tool_and_handoffs_both_ways_are_passed_by_hand(tmp_path):
    session = SQLiteSession("user_1", tmp_path / "a.db")
    assert isinstance(lookup_order, FunctionTool) and lookup_order.needs_approval is False
    assert can_pass_history(TRIAGE, session, {})
    session.close()


async def test_a_paused_turn_still_takes_the_sdk_session_path(tmp_path, monkeypatch):
    # The refund tool asks for approval: the turn pauses, is kept for the supervisor, and was
    # not run by hand (a paused turn's state must be the SDK's own).
    model = ScriptedModel([call("refund", {"order": 7}, "c1")])
    agent = Agent(name="Refund Agent", tools=[refund])
    passed = []
    monkeypatch.setattr(turns, "model_input", lambda *a, **k: passed.append(1))
    session = SQLiteSession("user_pause", tmp_path / "p.db")
    result = await run_turn(agent, session, "Refund order 7.", run_config=RunConfig(model=model))
    assert result.interruptions and passed == []
    assert await read_all(session) == []  # kept beside the session until decided
    session.close()


def _assistant(text: str, item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


HISTORIES: dict[str, list[Any]] = {
    "empty": [],
    "messages": [{"role": "user", "content": "hi"}, _assistant("hello", "m1")],
    "repeated message ids": [_assistant("one", "m1"), _assistant("two", "m1")],  # messages never dedupe
    "internal keys": [{"role": "user", "content": "hi", "created_by": "compaction"}, _assistant("ok", "m2")],
    "system and developer": [{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}],
    "a call without its output": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "c1"},
    ],
    "an output without its call": [
        {"type": "function_call_output", "call_id": "c0", "output": "x"},
        _assistant("ok", "m3"),
    ],
}


@pytest.mark.parametrize("limited", [False, True], ids=["whole", "capped"])
@pytest.mark.parametrize("name", sorted(HISTORIES))
def test_the_model_input_equals_every_step_of_the_sdk_preparation(name, limited):
    from multisessions import direct

    history = HISTORIES[name]
    prepared, new = direct.model_input(history, "next", limited=limited)
    assert new == [{"content": "next", "role": "user"}]
    assert prepared == direct._prepared(history, new, limited=limited)  # the SDK's steps, all of them
    assert all("created_by" not in item for item in prepared)
    assert prepared is not history and all(p is not h for p, h in zip(prepared, history, strict=False))
