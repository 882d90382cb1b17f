"""``one_turn``: the block the lesson wraps around the SDK's own ``Runner.run``."""

from __future__ import annotations

import asyncio

import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession

import agent
from helpers import reply
from multisessions import OfflineModel, SQLiteStore, TurnFailed, one_turn, read_all
from multisessions.errors import AwaitingApproval

CONFIG = RunConfig(model=OfflineModel())


async def test_the_lesson_runs_the_sdk_runner_on_the_session_and_the_sdk_writes_through_it(db, monkeypatch):
    calls: list[dict] = []
    real = Runner.run

    async def counted(starting_agent, input, **kwargs):
        calls.append(kwargs)
        return await real(starting_agent, input, **kwargs)

    added: list[int] = []
    real_add = SQLiteSession.add_items

    async def add_items(self, items, *args, **kwargs):
        added.append(len(items))
        return await real_add(self, items, *args, **kwargs)

    monkeypatch.setattr(Runner, "run", counted)
    monkeypatch.setattr(SQLiteSession, "add_items", add_items)
    await agent.multi_user_sessions(db_path=db)
    await agent.shared_session_agents(db_path=db)
    assert len(calls) == 7 + 4 and all(call.get("session") is not None for call in calls)
    assert all(type(call["session"]).__name__ == "PendingTurn" for call in calls)
    assert added == []  # every turn was written once by the store (one transaction), not piecemeal


async def test_a_block_that_commits_writes_the_run_and_the_agent_that_answered(db):
    triage = agent.support_agents()["Triage Agent"]
    session = SQLiteSession("thread_t", db)
    async with one_turn(session, triage) as turn:
        assert turn.agent is triage  # a new session starts with the starting agent
        result = await Runner.run(
            turn.agent,
            "I was charged twice for order 5512, can I get a refund?",
            session=turn,
            run_config=CONFIG,
        )
        await turn.commit(result)
        assert await read_all(session) == []  # nothing is written before the block ends
    assert result.last_agent.name == "Billing Agent"
    assert len(await read_all(session)) == 4  # user, handoff call, its output, the answer
    assert await SQLiteStore(db).load_last_agent("thread_t") == "Billing Agent"
    async with one_turn(session, triage) as turn:
        assert turn.agent.name == "Billing Agent"  # the follow-up goes to the specialist


async def test_a_block_that_raises_or_never_commits_writes_nothing(db):
    session = SQLiteSession("user_x", db)
    bot = Agent(name="Bot")
    with pytest.raises(TurnFailed) as failed:
        async with one_turn(session, bot) as turn:
            result = await Runner.run(turn.agent, "hi", session=turn, run_config=CONFIG)
            await turn.commit(result)
            raise RuntimeError("the app failed after the run")
    assert isinstance(failed.value.cause, RuntimeError) and "unchanged" in str(failed.value)
    async with one_turn(session, bot) as turn:
        await Runner.run(turn.agent, "hi", session=turn, run_config=CONFIG)  # run, but not kept
    assert await read_all(session) == []
    assert await SQLiteStore(db).load_last_agent("user_x") is None


async def test_a_streamed_run_is_committed_only_once_read_to_the_end(db):
    session = SQLiteSession("user_s", db)
    with pytest.raises(TurnFailed, match="read the streamed run to its end"):
        async with one_turn(session, Agent(name="Bot")) as turn:
            result = Runner.run_streamed(turn.agent, "hi", session=turn, run_config=CONFIG)
            await turn.commit(result)
    async with one_turn(session, Agent(name="Bot")) as turn:
        result = Runner.run_streamed(turn.agent, "hi", session=turn, run_config=CONFIG)
        async for _ in result.stream_events():
            pass
        await turn.commit(result)
    assert len(await read_all(session)) == 2


async def test_two_blocks_on_one_session_run_one_after_the_other(db):
    from agents.testing import ScriptedModel

    model = ScriptedModel([reply("first"), reply("second")])
    config = RunConfig(model=model)

    async def say(text: str) -> None:
        session = SQLiteSession("user_twice", db)  # each its own object, as two requests would have
        async with one_turn(session, Agent(name="Bot")) as turn:
            result = await Runner.run(turn.agent, text, session=turn, run_config=config)
            await asyncio.sleep(0.05)  # the other block waits meanwhile
            await turn.commit(result)

    await asyncio.gather(say("one"), say("two"))
    assert [len(call.input) for call in model.calls] == [1, 3]  # the second saw the whole first turn


async def test_a_session_waiting_for_approval_refuses_a_new_block(db):
    from multisessions import run_turn

    triage = agent.support_agents(refunds=True)["Triage Agent"]
    session = SQLiteSession("thread_wait", db)
    await run_turn(
        triage, session, "I was charged twice for order 5512, please refund it.", run_config=CONFIG
    )
    with pytest.raises(TurnFailed) as refused:
        async with one_turn(session, triage):
            pass
    assert isinstance(refused.value.cause, AwaitingApproval)
