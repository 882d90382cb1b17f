"""stream_turn: a streamed turn is whole or absent, token by token, one at a time per session."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agents import Agent, RunConfig, SQLiteSession
from agents.stream_events import RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

import agent
from multisessions import OfflineModel, TurnFailed, read_all
from multisessions.turns import held_locks, stream_turn

CONFIG = RunConfig(model=OfflineModel())
BOT = Agent(name="Support Agent")


def deltas_of(events: list[Any]) -> list[str]:
    return [
        e.data.delta
        for e in events
        if isinstance(e, RawResponsesStreamEvent) and isinstance(e.data, ResponseTextDeltaEvent)
    ]


class FailsMidStream(OfflineModel):
    """Streams the first events of its answer, then the connection breaks."""

    async def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        count = 0
        async for event in super().stream_response(*args, **kwargs):
            count += 1
            if count == 4:
                raise ConnectionError("connection dropped mid-stream")
            yield event


@pytest.fixture
def session(db):
    session = SQLiteSession("user_stream", db)
    yield session
    session.close()


async def test_a_streamed_turn_arrives_word_by_word_and_is_committed_once_read_to_the_end(session):
    await session.add_items([{"role": "user", "content": "My name is Ada."}])
    async with stream_turn(BOT, session, "What's my name?", run_config=CONFIG) as result:
        events = [event async for event in result.stream_events()]
        assert len(await read_all(session)) == 1  # nothing of this turn is stored mid-block
    pieces = deltas_of(events)
    assert len(pieces) > 1 and "".join(pieces) == result.final_output == "Your name is Ada."
    stored = await read_all(session)
    assert [i.get("role") for i in stored] == ["user", "user", "assistant"]
    assert held_locks() == 0


async def test_a_stream_that_fails_midway_leaves_the_session_unchanged(session):
    await stream_once(session, "My email is ada@example.com.")
    before = await read_all(session)
    with pytest.raises(TurnFailed) as failure:
        async with stream_turn(
            BOT, session, "And my order is 7.", run_config=RunConfig(model=FailsMidStream())
        ) as r:
            async for _ in r.stream_events():
                pass
    assert isinstance(failure.value.cause, ConnectionError)
    assert await read_all(session) == before
    assert held_locks() == 0


async def test_leaving_the_block_before_the_stream_ends_keeps_nothing(session):
    before = await read_all(session)
    async with stream_turn(BOT, session, "My name is Ada.", run_config=CONFIG) as result:
        async for _ in result.stream_events():
            break  # the client went away after the first event
    assert await read_all(session) == before == []
    assert held_locks() == 0


async def test_never_reading_the_stream_keeps_nothing(session):
    async with stream_turn(BOT, session, "My name is Ada.", run_config=CONFIG):
        pass
    assert await read_all(session) == []


async def test_a_cancelled_stream_keeps_nothing_and_frees_the_session(session):
    started = asyncio.Event()

    async def reader() -> None:
        async with stream_turn(BOT, session, "My name is Ada.", run_config=CONFIG) as result:
            async for _ in result.stream_events():
                started.set()
                await asyncio.sleep(10)

    task = asyncio.create_task(reader())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await read_all(session) == []
    assert held_locks() == 0
    await stream_once(session, "My name is Ada.")  # the session is usable again
    assert len(await read_all(session)) == 2


async def stream_once(session: Any, message: str, who: Agent[Any] = BOT) -> Any:
    async with stream_turn(who, session, message, run_config=CONFIG) as result:
        async for _ in result.stream_events():
            pass
    return result


async def test_concurrent_streamed_turns_on_one_session_run_one_after_another(session):
    messages = [f"Note {k}: my order number is {k}." for k in range(8)]
    await asyncio.gather(*(stream_once(session, m) for m in messages))
    items = await read_all(session)
    roles = [i.get("role") for i in items]
    assert roles == ["user", "assistant"] * 8  # never two user messages in a row
    for question, answer in zip(items[::2], items[1::2], strict=True):
        number = question["content"].split("is ")[1].rstrip(".")
        assert f"({number})" in answer["content"][0]["text"]


async def test_a_streamed_handoff_reaches_the_specialist_and_is_stored_whole(session):
    triage = agent.support_agents()["Triage Agent"]
    result = await stream_once(session, "I was charged twice, can I get a refund?", triage)
    assert result.last_agent.name == "Billing Agent"
    kinds = [i.get("type") or i.get("role") for i in await read_all(session)]
    assert kinds == ["user", "function_call", "function_call_output", "message"]
