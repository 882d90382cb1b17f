"""A second message on a busy session (a double text), on every store and across processes:
``wait`` queues it and says so, ``reject`` refuses it at once, ``interrupt`` stops the running turn
(nothing of it kept) and answers the new message instead."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import sqlite3
import uuid

import httpx
import pytest
from agents import Agent, RunConfig

from conftest import Cli
from multisessions import (
    OfflineModel,
    SessionBusy,
    Settings,
    SQLiteStore,
    TurnFailed,
    TurnInterrupted,
    held_locks,
    read_all,
    run_turn,
    stream_turn,
)
from multisessions.errors import ConfigError
from multisessions.settings import load_settings
from serve_fixture import auth, serve_tokens
from stores_fixture import REDIS_URL, empty_postgres_database, postgres_url, unavailable
from tools import stress

pytestmark = pytest.mark.slow  # turns in other processes on every store: python -m pytest -m slow

AGENT = Agent(name="Support Agent")


@pytest.fixture(params=["sqlite", "pooled", "redis", "postgres"])
async def where(request) -> str:
    """Where the two processes keep the session: the SQLite file (alone or through a pool), or a
    reachable server (Redis with a key prefix of this test's own, this process's PostgreSQL database)."""
    if request.param in ("sqlite", "pooled"):
        return request.param
    if request.param == "redis":
        url = f"{REDIS_URL}?key_prefix=double-{uuid.uuid4().hex[:8]}"
    else:
        await empty_postgres_database()
        url = postgres_url()
    store = stress.open_where(url, "unused.db")
    try:
        await store.check()
    except Exception as exc:
        unavailable(request.param, str(exc))
    finally:
        await store.close()
    return url


def test_each_policy_meets_a_turn_running_in_another_process(where, db):
    figures = stress.double_text(where, db, first_seconds=0.6)
    assert figures["first_running"] == 3
    outcomes, stored = figures["outcomes"], figures["stored"]
    # wait: told once, then answered after the first turn, which is kept too, in order.
    assert outcomes["wait"] == ("answered", "answered")
    assert figures["wait_notice"] == 1  # it found the session busy, and waited
    assert stored["wait"] == ["first (wait)", "second (wait)"]
    # reject: refused at once, not after the running turn's second; the running turn is kept.
    assert outcomes["reject"] == ("answered", "SessionBusy")
    assert figures["reject_s"] < 0.5
    assert stored["reject"] == ["first (reject)"]
    # interrupt: the first turn (10 s long) stopped and left nothing; the second is stored.
    assert outcomes["interrupt"] == ("TurnInterrupted", "answered")
    assert figures["interrupt_stop_s"] < 3.0
    assert stored["interrupt"] == ["second (interrupt)"]


async def test_interrupt_in_the_same_process_stops_a_streamed_turn_and_keeps_only_the_new_one(db):
    store = SQLiteStore(db)
    session = store.open("user_kim")

    async def streamed_first() -> None:
        async with stream_turn(
            AGENT, session, "first", run_config=RunConfig(model=stress.Timed(10))
        ) as result:
            async for _ in result.stream_events():
                pass

    first = asyncio.create_task(streamed_first())
    await asyncio.sleep(0.3)
    await run_turn(
        AGENT,
        store.open("user_kim"),
        "second",
        on_busy="interrupt",
        run_config=RunConfig(model=OfflineModel()),
    )
    with pytest.raises(TurnInterrupted, match="a newer message on the session interrupted it"):
        await first
    assert [i["content"] for i in await read_all(session) if i.get("role") == "user"] == ["second"]
    assert held_locks() == 0
    await store.close()


async def test_reject_in_the_same_process_is_immediate_and_a_policy_is_checked_first(db):
    store = SQLiteStore(db)
    first = asyncio.create_task(
        run_turn(AGENT, store.open("user_kim"), "first", run_config=RunConfig(model=stress.Timed(0.5)))
    )
    await asyncio.sleep(0.1)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TurnFailed) as refused:
        await run_turn(
            AGENT,
            store.open("user_kim"),
            "second",
            on_busy="reject",
            run_config=RunConfig(model=OfflineModel()),
        )
    assert isinstance(refused.value.cause, SessionBusy)
    assert asyncio.get_running_loop().time() - started < 0.1
    with pytest.raises(ValueError, match="on_busy='later' must be one of: wait, reject, interrupt"):
        await run_turn(AGENT, store.open("user_kim"), "third", on_busy="later")  # type: ignore[arg-type]
    await first
    assert [i["content"] for i in await read_all(store.open("user_kim")) if i.get("role") == "user"] == [
        "first"
    ]
    await store.close()


def _hold(db: str, session_id: str, seconds: float, write_fd: int) -> None:
    """A child process: one turn of ``seconds`` on ``session_id``, telling the parent when it holds it."""

    async def go() -> None:
        store = SQLiteStore(db)
        await run_turn(
            AGENT,
            store.open(session_id),
            "first",
            run_config=RunConfig(model=stress.Timed(seconds, write_fd)),
        )
        await store.close()

    asyncio.run(go())
    os._exit(0)


def held_elsewhere(db, session_id: str, seconds: float) -> multiprocessing.Process:
    read_fd, write_fd = os.pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_hold, args=(str(db), session_id, seconds, write_fd)
    )
    child.start()
    os.close(write_fd)
    assert select.select([read_fd], [], [], 30)[0], "the other process never started its turn"
    os.close(read_fd)
    return child


def user_messages(db, session_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT json_extract(message_data, '$.content') FROM agent_messages"
            " WHERE session_id = ? AND json_extract(message_data, '$.role') = 'user' ORDER BY id",
            (session_id,),
        )
        return [row[0] for row in rows]


def test_the_chat_says_it_waits_for_the_turn_running_in_another_chat(cli: Cli, db):
    child = held_elsewhere(db, "user_alice", 0.5)
    result = cli("chat", "--user", "alice", "--db", str(db), stdin="My name is Alice.\n")
    child.join()
    lines = result.out.splitlines()
    notice = "[user_alice] session 'user_alice' is busy with another turn: waiting for it (up to 150 s)"
    assert notice in lines
    assert lines.index(notice) < next(i for i, line in enumerate(lines) if "Agent: " in line)
    assert user_messages(db, "user_alice") == ["first", "My name is Alice."]


def test_the_chat_with_on_busy_reject_says_so_in_one_line_and_goes_on(cli: Cli, db):
    child = held_elsewhere(db, "user_alice", 0.5)
    result = cli("chat", "--user", "alice", "--db", str(db), "--on-busy", "reject", stdin="Hello?\n")
    child.join()
    assert result.code == 1  # the chat went on; its last (and only) message was refused
    errors = [line for line in result.out.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: session 'user_alice' is busy with another turn (on_busy='reject'); "
        "send the message again when that turn has answered (nothing was saved)"
    ]
    assert user_messages(db, "user_alice") == ["first"]


def test_serve_on_busy_is_read_and_checked(tmp_path):
    assert load_settings({}, tmp_path / "none.env").serve_on_busy == "wait"
    assert load_settings({"SERVE_ON_BUSY": "interrupt"}, tmp_path / "none.env").serve_on_busy == "interrupt"
    with pytest.raises(ConfigError, match="SERVE_ON_BUSY='queue' must be one of: wait, reject, interrupt"):
        load_settings({"SERVE_ON_BUSY": "queue"}, tmp_path / "none.env")


@pytest.mark.parametrize("on_busy", ["reject", "interrupt"])
async def test_serve_answers_a_double_text_409_as_serve_on_busy_says(db, on_busy):
    from serve import create_app

    settings = Settings(serve_tokens=serve_tokens(), serve_rate=0, serve_on_busy=on_busy)
    app = create_app(settings, db_path=db, model=stress.Timed(0.6))
    url = "/api/conversations/support/messages"
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            first = asyncio.create_task(client.post(url, json={"message": "first"}, headers=auth("alice")))
            await asyncio.sleep(0.3)
            second = await client.post(url, json={"message": "second"}, headers=auth("alice"))
            first_reply = await first
    if on_busy == "reject":
        assert (second.status_code, second.headers["retry-after"]) == (409, "2")
        assert first_reply.status_code == 200
        kept = ["first"]
    else:
        assert (first_reply.status_code, second.status_code) == (409, 200)
        assert "a newer message on this conversation stopped this one" in first_reply.json()["detail"]
        kept = ["second"]
    assert user_messages(db, "support_feature_user_alice") == kept


async def test_serve_interrupting_a_streamed_turn_ends_its_stream_with_an_error_event(db):
    from serve import create_app
    from serve_fixture import events_of

    settings = Settings(serve_tokens=serve_tokens(), serve_rate=0, serve_on_busy="interrupt")
    app = create_app(settings, db_path=db, model=stress.Timed(0.6))
    url = "/api/conversations/support/messages"
    streamed = {**auth("alice"), "Accept": "text/event-stream"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            first = asyncio.create_task(client.post(url, json={"message": "first"}, headers=streamed))
            await asyncio.sleep(0.3)
            second = await client.post(url, json={"message": "second"}, headers=auth("alice"))
            first_reply = await first
    assert second.status_code == 200
    assert events_of(first_reply.text)[-1] == (
        "error",
        {"detail": "a newer message on this conversation stopped this one; nothing was saved", "status": 409},
    )
    assert user_messages(db, "support_feature_user_alice") == ["second"]


async def test_a_request_to_stop_is_for_the_holder_it_named_never_a_later_one(store):
    backends = [store.leases]
    io = store.turn_io(store.open("thread_marks"))
    if io is not None and io is not store.leases:
        backends.append(io)  # PostgreSQL's short path keeps its leases in the same table
    for n, leases in enumerate(backends):
        session_id = f"thread_marks{n}-{uuid.uuid4().hex[:6]}"
        assert await leases.try_acquire(session_id, "first", 0.3)
        await leases.request_interrupt(session_id)
        assert await leases.interrupted([(session_id, "first"), ("thread_other", "x")]) == [session_id]
        await leases.release(session_id, "first")  # it stopped
        assert await leases.try_acquire(session_id, "second", 0.3)
        assert await leases.interrupted([(session_id, "second")]) == []
        await leases.request_interrupt(session_id)
        await asyncio.sleep(0.5)  # the second holder died, marked: its lease runs out
        assert await leases.try_acquire(session_id, "third", 30)
        assert await leases.interrupted([(session_id, "third")]) == []
        await leases.release(session_id, "third")
