"""A history cap bounds what the model is sent, keeps the store whole, and never splits a tool call."""

from __future__ import annotations

import pytest
from agents import Agent, RunConfig, SessionSettings, function_tool
from agents.testing import ScriptedModel, function_call

import agent
from agent import open_session
from helpers import reply
from multisessions import read_all, run_turn


async def test_cap_bounds_model_input_over_50_turns_while_the_store_keeps_everything(db):
    model = ScriptedModel([reply(f"a{i}") for i in range(50)])
    config = RunConfig(model=model, session_settings=SessionSettings(limit=10))
    session = open_session("user_long", db)
    for turn in range(50):
        await run_turn(Agent(name="Bot"), session, f"message {turn}", run_config=config)
    sizes = [len(call.input) for call in model.calls]
    assert sizes[:5] == [1, 3, 5, 7, 9]
    assert max(sizes) == 11 and sizes[-1] == 11  # 10 history items + the new message
    assert len(await read_all(session)) == 100


async def test_history_cap_demo_prints_bounded_input_and_usage(db, capsys):
    await agent.history_cap_demo(db_path=db, turns=12, cap=4)
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("12 |"))
    # Turn 12 sends every item so far; the cap, 4 and the new message; the summary, itself, the
    # 6 items it does not cover yet (under window 4 + threshold 4) and the new message.
    assert [cell.strip() for cell in row.split("|")[:4]] == ["12", "23", "5", "8"]
    assert "13 requests" in out and out.count("the store holds 26 items") == 3
    assert "      capped: I don't know your name" in out  # the cap forgot turn 1
    assert "  summarized: Your name is Kai." in out  # the summary kept it


@function_tool
def order_status(order: str) -> str:
    """The status of an order."""
    return f"order {order} shipped"


def tool_pairs_whole(model_input: list) -> bool:
    """Every tool output in the input comes after the call it answers."""
    seen_calls = set()
    for item in model_input:
        if item.get("type") == "function_call":
            seen_calls.add(item["call_id"])
        if item.get("type") == "function_call_output" and item["call_id"] not in seen_calls:
            return False
    return True


@pytest.mark.parametrize("cap", range(1, 14))
async def test_a_cap_never_sends_a_tool_output_without_its_call(cap, db):
    billing = Agent(name="Billing Agent", tools=[order_status])
    triage = Agent(name="Triage Agent", handoffs=[billing], tools=[order_status])
    billing.handoffs = [triage]  # a turn starts where the last one ended: each hands off to the other
    n = 0

    def cid() -> str:
        nonlocal n
        n += 1
        return f"call-{n}"

    steps = []
    for turn in range(3):
        steps += [
            [function_call("order_status", {"order": str(turn)}, call_id=cid())],
            [function_call(f"transfer_to_{'triage' if turn % 2 else 'billing'}_agent", {}, call_id=cid())],
            [function_call("order_status", {"order": str(turn)}, call_id=cid())],
            reply(f"done {turn}"),
        ]
    model = ScriptedModel(steps)
    config = RunConfig(model=model, session_settings=SessionSettings(limit=cap))
    session = open_session(f"thread_cap{cap}", db)
    for turn in range(3):
        await run_turn(triage, session, f"where is order {turn}?", run_config=config)
    model.assert_complete()
    assert all(tool_pairs_whole(call.input) for call in model.calls)
    stored = await read_all(session)
    assert len(stored) == 3 * 8  # user, 3 calls, 3 outputs, answer: every turn kept whole in the store
