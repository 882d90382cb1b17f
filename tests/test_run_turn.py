"""What the model receives through run_turn, and what the store holds after success and failure."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession, function_tool
from agents.testing import ModelStep, ScriptedModel, function_call

import agent
from agent import open_session
from helpers import reply, user_texts
from multisessions import SQLiteStore, TurnFailed, read_all, run_turn
from multisessions.turns import held_locks


def config(model) -> RunConfig:
    return RunConfig(model=model)


async def test_alices_second_turn_carries_her_first_message_and_nothing_of_bobs(db):
    model = ScriptedModel([reply("hi Alice"), reply("hi Bob"), reply("you are Alice")])
    bot = Agent(name="Bot")
    alice, bob = open_session("user_alice", db), open_session("user_bob", db)
    await run_turn(bot, alice, "I am Alice, alice@example.com", run_config=config(model))
    await run_turn(bot, bob, "I am Bob, bob@example.org", run_config=config(model))
    await run_turn(bot, alice, "Who am I?", run_config=config(model))
    third = model.calls[2].input
    assert user_texts(third) == ["I am Alice, alice@example.com", "Who am I?"]
    assert "bob" not in repr(third).lower()
    assert user_texts(model.calls[1].input) == ["I am Bob, bob@example.org"]
    model.assert_complete()


async def test_each_context_session_sends_only_its_own_turns(db):
    model = ScriptedModel([reply(f"r{i}") for i in range(6)])
    bot = Agent(name="Bot")
    contexts = {c: open_session(agent.feature_session_id(c, "u1"), db) for c in ("support", "sales", "chat")}
    for c, session in contexts.items():
        await run_turn(bot, session, f"first in {c}", run_config=config(model))
    for c, session in contexts.items():
        await run_turn(bot, session, f"second in {c}", run_config=config(model))
    for call, c in zip(model.calls[3:], contexts, strict=True):
        assert user_texts(call.input) == [f"first in {c}", f"second in {c}"]


async def test_specialist_sees_what_triage_heard_and_gets_the_follow_up_in_a_new_process(db):
    agents_by_name = agent.support_agents()
    triage = agents_by_name["Triage Agent"]
    model = ScriptedModel(
        [
            reply("Hello Dana"),  # triage, turn 1
            [function_call("transfer_to_billing_agent", {}, call_id="call-h1")],  # triage, turn 2
            reply("Refund on its way"),  # billing, turn 2
            reply("Your order is 5512"),  # turn 3: must be billing
        ]
    )
    session = open_session("thread_t1", db)
    store = SQLiteStore(db)
    for text in ("My name is Dana", "Charged twice for order 5512"):
        current = agents_by_name.get(await store.load_last_agent(session.session_id) or "", triage)
        result = await run_turn(current, session, text, run_config=config(model))
        await store.save_last_agent(session.session_id, result.last_agent.name)
    assert result.last_agent.name == "Billing Agent"
    billing_call = model.calls[2]
    assert "billing specialist" in billing_call.system_instructions
    assert user_texts(billing_call.input) == ["My name is Dana", "Charged twice for order 5512"]
    session.close()

    # A new session object on the same file stands in for a new process.
    resumed = SQLiteSession("thread_t1", db)
    current = agents_by_name[await SQLiteStore(db).load_last_agent(resumed.session_id) or ""]
    await run_turn(current, resumed, "What is my order?", run_config=config(model))
    assert "billing specialist" in model.calls[3].system_instructions
    assert user_texts(model.calls[3].input)[-1] == "What is my order?"
    model.assert_complete()


async def test_a_failed_model_call_leaves_no_orphan_message(db):
    model = ScriptedModel([reply("ok"), ModelStep.raise_error(RuntimeError("model down")), reply("ok2")])
    bot = Agent(name="Bot")
    session = open_session("s", db)
    await run_turn(bot, session, "first", run_config=config(model))
    before = await read_all(session)
    with pytest.raises(TurnFailed, match="model down"):
        await run_turn(bot, session, "second", run_config=config(model))
    assert await read_all(session) == before
    # The retry sends the message once, not twice.
    await run_turn(bot, session, "second", run_config=config(model))
    assert user_texts(model.calls[2].input) == ["first", "second"]


async def test_sdk_canary_plain_runner_run_still_leaves_the_orphan_message(db):
    # Why run_turn exists. If this fails, the SDK stopped saving the input before the model call:
    # update docs/plain-sdk.md's "orphan user message" (and run_turn's reason to hold writes).
    model = ScriptedModel([ModelStep.raise_error(RuntimeError("model down"))])
    session = SQLiteSession("user_canary", db)
    with pytest.raises(RuntimeError, match="model down"):
        await Runner.run(Agent(name="Bot"), "hello", session=session, run_config=config(model))
    assert await session.get_items() == [{"role": "user", "content": "hello"}], (
        "the SDK no longer leaves the orphan user message: update docs/plain-sdk.md"
    )
    session.close()


async def test_a_failing_tool_leaves_the_session_unchanged(db):
    # failure_error_function=None makes the SDK raise instead of telling the model the tool failed.
    @function_tool(failure_error_function=None)
    def lookup(order: str) -> str:
        """Look an order up."""
        raise ValueError("database offline")

    model = ScriptedModel([[function_call("lookup", {"order": "1"}, call_id="call-t1")]])
    session = open_session("s", db)
    with pytest.raises(TurnFailed, match="database offline"):
        await run_turn(
            Agent(name="Bot", tools=[lookup]), session, "where is order 1?", run_config=config(model)
        )
    assert await read_all(session) == []


async def test_a_cancelled_turn_leaves_the_session_unchanged(db):
    async def slow(call):
        await asyncio.sleep(10)
        return reply("late")

    model = ScriptedModel([reply("first answer"), ModelStep.respond(slow)])
    bot = Agent(name="Bot")
    session = open_session("s", db)
    await run_turn(bot, session, "one", run_config=config(model))
    before = await read_all(session)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run_turn(bot, session, "two", run_config=config(model)), 0.2)
    assert await read_all(session) == before
    assert held_locks() == 0


async def test_turns_on_one_session_never_interleave(db):
    def answer(call):
        return reply("answer to " + user_texts(call.input)[-1])

    model = ScriptedModel([ModelStep.respond(answer) for _ in range(40)])
    bot = Agent(name="Bot")
    session = open_session("shared", db)
    await asyncio.gather(*(run_turn(bot, session, f"m{i}", run_config=config(model)) for i in range(40)))
    items = await read_all(session)
    assert len(items) == 80
    for question, answer_item in zip(items[::2], items[1::2], strict=True):
        assert answer_item["content"][0]["text"] == "answer to " + question["content"]
    assert held_locks() == 0


async def test_turns_on_different_sessions_run_concurrently(db):
    started, release = asyncio.Event(), asyncio.Event()
    running = 0

    async def wait_for_both(call):
        nonlocal running
        running += 1
        if running == 2:
            started.set()
        await release.wait()
        return reply("done")

    model = ScriptedModel([ModelStep.respond(wait_for_both) for _ in range(2)])
    bot = Agent(name="Bot")
    a, b = open_session("a", db), open_session("b", db)
    both = asyncio.gather(
        run_turn(bot, a, "x", run_config=config(model)), run_turn(bot, b, "y", run_config=config(model))
    )
    await asyncio.wait_for(started.wait(), 2)  # both turns are inside the model at once
    release.set()
    await both


class FlakyWrites(SQLiteSession):
    """A SQLiteSession whose next ``failures`` writes fail with ``error`` (and roll back)."""

    def __init__(self, *args, failures: int, error: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.failures, self.error, self.writes = failures, error, 0

    async def add_items(self, items):
        self.writes += 1
        if self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError(self.error)
        await super().add_items(items)


async def test_a_locked_database_is_retried_and_the_turn_written_once(db):
    session = FlakyWrites("s", db, failures=2, error="database is locked")
    await run_turn(Agent(name="Bot"), session, "hello", run_config=config(ScriptedModel([reply("hi")])))
    assert session.writes == 3
    assert [i.get("role") for i in await read_all(session)] == ["user", "assistant"]


async def test_a_failed_write_is_a_turn_failure_and_stores_nothing(db):
    session = FlakyWrites("s", db, failures=1, error="disk I/O error")
    with pytest.raises(TurnFailed, match="disk I/O error"):
        await run_turn(Agent(name="Bot"), session, "hello", run_config=config(ScriptedModel([reply("hi")])))
    assert await read_all(session) == []


@pytest.mark.parametrize("url", ["redis://127.0.0.1:9/0", "postgresql://postgres@127.0.0.1:9/test"])
async def test_a_store_that_fails_while_the_turn_takes_its_lease_fails_the_turn_in_one_line(url):
    # Nothing listens on port 9: the turn fails before the model is called, as TurnFailed (like
    # every other failed turn), and its one line names the store without a traceback or secret.
    from multisessions import open_store
    from multisessions.turns import why_it_failed

    store = open_store(url)
    model = ScriptedModel([reply("never")])
    config = RunConfig(model=model)
    try:
        with pytest.raises(TurnFailed) as failed:
            await run_turn(Agent(name="Bot"), store.open("user_down"), "hi", run_config=config)
    finally:
        await store.close()
    assert not model.calls
    line = why_it_failed(failed.value, where=store.name, store_url=url)
    assert "\n" not in line and ("failed" in line or "unreachable" in line), line
