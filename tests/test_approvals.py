"""A turn paused for a supervisor waits beside the session, refuses new turns, and resumes whole."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from functools import partial

import pytest
from agents import RunConfig

import agent
from conftest import ROOT, subprocess_env
from multisessions import (
    Ledger,
    OfflineModel,
    SQLiteStore,
    TurnFailed,
    pending_approvals,
    read_all,
    resume_turn,
    run_turn,
    stream_turn,
)
from multisessions.cli import Lesson, main
from multisessions.errors import AwaitingApproval
from multisessions.settings import Settings

CONFIG = RunConfig(model=OfflineModel())
ASK = "I was charged twice for order 5512, please refund it."


def kinds(items: list) -> list[str]:
    return [i["role"] if i.get("type", "message") == "message" else i["type"] for i in items]


def whole(items: list) -> bool:
    """Every tool call in the history is followed by its output."""
    calls = [i["call_id"] for i in items if i.get("type") == "function_call"]
    outputs = [i["call_id"] for i in items if i.get("type") == "function_call_output"]
    return calls == outputs


async def pause(store, session_id: str = "thread_refund") -> tuple:
    triage = agent.support_agents(refunds=True)["Triage Agent"]
    session = store.open(session_id)
    await run_turn(triage, session, "Hi, my order number is 5512.", run_config=CONFIG)
    result = await run_turn(triage, session, ASK, run_config=CONFIG)
    return triage, session, result


async def test_a_paused_turn_writes_nothing_to_the_history_and_waits_beside_it(store):
    triage, session, result = await pause(store)
    assert [call.name for call in result.interruptions] == ["refund_order"]
    assert kinds(await read_all(session)) == ["user", "assistant"]  # only the first, whole turn
    waiting = await pending_approvals(store.store)
    assert [(w.session_id, w.agent, w.tool) for w in waiting] == [
        ("thread_refund", "Billing Agent", "refund_order")
    ]
    assert waiting[0].arguments == '{"order_id": "5512"}'


async def test_a_new_turn_on_a_waiting_session_is_refused_and_changes_nothing(store):
    triage, session, _ = await pause(store)
    before = await read_all(session)
    with pytest.raises(TurnFailed) as refused:
        await run_turn(triage, session, "Hello?", run_config=CONFIG)
    assert isinstance(refused.value.cause, AwaitingApproval)
    with pytest.raises(TurnFailed):
        async with stream_turn(triage, session, "Hello?", run_config=CONFIG) as result:
            async for _ in result.stream_events():
                pass
    assert await read_all(session) == before
    assert len(await pending_approvals(store.store)) == 1


async def test_approval_from_a_new_session_object_commits_the_whole_turn_in_order(store):
    triage, session, _ = await pause(store)
    other = store.open(session.session_id)  # stands in for the supervisor's process
    result = await resume_turn(
        triage, other, approve=True, run_config=CONFIG, context=Ledger(store, other.session_id)
    )
    assert result.final_output == "refund_order: refund issued for order 5512"
    items = await read_all(session)
    assert kinds(items) == [
        "user",
        "assistant",
        "user",
        "function_call",  # the handoff
        "function_call_output",
        "function_call",  # refund_order
        "function_call_output",
        "assistant",
    ]
    assert whole(items) and await pending_approvals(store.store) == []
    await run_turn(triage, session, "Thanks!", run_config=CONFIG)  # the session takes turns again


async def test_a_rejection_tells_the_model_why_and_also_ends_whole(store):
    triage, session, _ = await pause(store)
    result = await resume_turn(
        triage, session, approve=False, reason="Refunds over the limit need a manager.", run_config=CONFIG
    )  # a rejected call never runs its tool: no ledger needed
    assert "Refunds over the limit need a manager." in result.final_output
    items = await read_all(session)
    assert whole(items) and kinds(items)[-1] == "assistant"
    assert "refund issued" not in repr(items)


async def test_resuming_when_nothing_waits_fails_cleanly(store):
    triage = agent.support_agents(refunds=True)["Triage Agent"]
    session = store.open("thread_idle")
    with pytest.raises(TurnFailed, match="no turn is waiting"):
        await resume_turn(triage, session, approve=True, run_config=CONFIG)


async def test_a_streamed_turn_can_pause_too(store):
    triage = agent.support_agents(refunds=True)["Triage Agent"]
    session = store.open("thread_streamed")
    await run_turn(triage, session, "Hi, my order number is 5512.", run_config=CONFIG)
    async with stream_turn(triage, session, ASK, run_config=CONFIG) as result:
        async for _ in result.stream_events():
            pass
    assert [call.name for call in result.interruptions] == ["refund_order"]
    assert len(await read_all(session)) == 2
    await resume_turn(
        triage, session, approve=True, run_config=CONFIG, context=Ledger(store, session.session_id)
    )
    assert whole(await read_all(session))


async def test_a_supervisor_in_another_process_approves_from_the_command_line(db, capsys):
    store = SQLiteStore(db)
    await pause(store, "thread_cli")
    lesson = Lesson(
        agent.DEMOS, agents=partial(agent.support_agents, refunds=True), first_agent="Triage Agent"
    )
    assert await asyncio.to_thread(main, ["approvals", "list", "--db", str(db)], lesson, Settings()) == 0
    assert 'thread_cli  Billing Agent: refund_order({"order_id": "5512"})' in capsys.readouterr().out
    approved = subprocess.run(  # the supervisor's own process
        [sys.executable, str(ROOT / "agent.py"), "approvals", "approve", "thread_cli", "--db", str(db)],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approved.returncode == 0, approved.stderr
    assert "approved. Billing Agent: refund_order: refund issued for order 5512" in approved.stdout
    items = await read_all(store.open("thread_cli"))
    assert whole(items) and len(items) == 8
    assert await store.load_last_agent("thread_cli") == "Billing Agent"


async def test_a_supervisor_rejects_from_the_command_line_and_is_told_so(db, capsys):
    store = SQLiteStore(db)
    await pause(store, "thread_no")
    lesson = Lesson(
        agent.DEMOS, agents=partial(agent.support_agents, refunds=True), first_agent="Triage Agent"
    )
    argv = ["approvals", "reject", "thread_no", "--reason", "duplicate", "--db", str(db)]
    assert await asyncio.to_thread(main, argv, lesson, Settings()) == 0
    out = capsys.readouterr().out
    assert "\n[thread_no] rejected. Billing Agent: refund_order: duplicate\n" in out  # once said "rejectd"
    assert whole(await read_all(store.open("thread_no")))
    assert await store.load_pending("thread_no") is None
