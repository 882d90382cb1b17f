"""The SQLite short turn path: one call to start a turn, one to commit it, the SDK's own rows."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
from contextlib import closing

import pytest
from agents import Agent, RunConfig, Runner, SessionSettings, SQLiteSession
from agents.extensions.memory import AdvancedSQLiteSession
from agents.testing import ModelStep, ScriptedModel

from helpers import reply, user_texts
from multisessions import SQLitePool, SQLiteStore, TurnFailed, run_turn
from multisessions.errors import AwaitingApproval, LeaseLost
from multisessions.stores import TurnWrite, sqlite_turns
from multisessions.stores.sqlite_store import sqlite_turns as turns_of

ITEMS = [
    {"role": "user", "content": "I am Dana, order 5512 — café ☕"},
    {"role": "assistant", "content": [{"type": "output_text", "text": "Hello Dana"}], "type": "message"},
    {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"order": 5512}'},
    {"type": "function_call_output", "call_id": "c1", "output": "shipped"},
]


def without_ids(calls) -> list[list[dict]]:
    return [[{k: v for k, v in item.items() if k != "id"} for item in call.input] for call in calls]


def rows(db, session_id: str) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        sql = "SELECT message_data FROM agent_messages WHERE session_id = ? ORDER BY id"
        return [r[0] for r in conn.execute(sql, (session_id,))]


async def test_a_commit_writes_exactly_the_rows_sqlitesession_add_items_writes(tmp_path):
    ours, sdks = tmp_path / "ours.db", tmp_path / "sdk.db"
    io = turns_of(ours)
    assert await io.begin("thread_1", "me", 5, None) is not None
    assert await io.commit("thread_1", "me", TurnWrite(ITEMS))
    sdk = SQLiteSession("thread_1", sdks)
    await sdk.add_items(ITEMS)
    sdk.close()
    assert rows(ours, "thread_1") == rows(sdks, "thread_1")
    reader = SQLiteSession("thread_1", ours)  # and the SDK's class reads them back as written
    assert await reader.get_items() == ITEMS
    reader.close()
    with closing(sqlite3.connect(ours)) as conn:
        assert conn.execute("SELECT session_id FROM agent_sessions").fetchall() == [("thread_1",)]
        assert conn.execute("SELECT count(*) FROM multisessions_leases").fetchone() == (0,)  # freed


async def test_run_turn_on_a_plain_session_starts_and_commits_in_two_calls_without_the_sdks_methods(
    db, monkeypatch
):
    session = SQLiteSession("user_dana", db)
    calls = []

    def counted(name):
        original = getattr(sqlite_turns.SQLiteTurns, name)

        async def call(self, *args):
            calls.append(name)
            return await original(self, *args)

        return call

    def refuse(*args, **kwargs):
        raise AssertionError("the short path went through the SDK's session methods")

    for name in ("begin", "commit", "try_acquire", "release"):
        monkeypatch.setattr(sqlite_turns.SQLiteTurns, name, counted(name))
    monkeypatch.setattr(SQLiteSession, "get_items", refuse)
    monkeypatch.setattr(SQLiteSession, "add_items", refuse)
    model = ScriptedModel([reply("Hello Dana"), reply("Your order is 5512")])
    await run_turn(Agent(name="Bot"), session, "I am Dana, order 5512", run_config=RunConfig(model=model))
    result = await run_turn(Agent(name="Bot"), session, "Which order?", run_config=RunConfig(model=model))
    assert calls == ["begin", "commit", "begin", "commit"]  # the commit frees the lease itself
    assert user_texts(model.calls[1].input) == ["I am Dana, order 5512", "Which order?"]
    monkeypatch.undo()
    assert await SQLiteSession("user_dana", db).get_items() == result.to_input_list()


async def test_turns_committing_at_once_share_one_transaction_and_each_keeps_its_own_items(db, monkeypatch):
    flushes, turns_in = [0], []  # the thread's transactions, and the one each turn was written in
    flush, write_turn = sqlite_turns.SQLiteTurns._write_queued, sqlite_turns._write_turn

    def counted_flush(self, conn):
        flushes[0] += 1
        return flush(self, conn)

    def counted_turn(conn, turn):
        turns_in.append(flushes[0])
        return write_turn(conn, turn)

    monkeypatch.setattr(sqlite_turns.SQLiteTurns, "_write_queued", counted_flush)
    monkeypatch.setattr(sqlite_turns, "_write_turn", counted_turn)
    model = ScriptedModel([reply(f"answer {i}") for i in range(40)])
    sessions = [SQLiteSession(f"user_{i}", db) for i in range(20)]
    await run_turn(Agent(name="Bot"), sessions[0], "warm up", run_config=RunConfig(model=model))
    turns_in.clear()
    await asyncio.gather(
        *(
            run_turn(Agent(name="Bot"), s, f"I am user {i}", run_config=RunConfig(model=model))
            for i, s in enumerate(sessions)
        )
    )
    assert len(turns_in) == 20
    assert len(set(turns_in)) < 20  # some transactions carried several turns
    for i, s in enumerate(sessions):
        texts = [item["content"] for item in await s.get_items() if item.get("role") == "user"]
        assert texts[-1] == f"I am user {i}"


async def test_a_turn_whose_lease_was_taken_meanwhile_writes_nothing_and_says_so(db):
    session = SQLiteSession("user_dana", db)

    def steal(request):
        # Another process's turn takes the session while this one waits for its model.
        with closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("UPDATE multisessions_leases SET owner = 'someone else'")
        return reply("too late")

    model = ScriptedModel([ModelStep.respond(steal)])
    with pytest.raises(TurnFailed) as failure:
        await run_turn(Agent(name="Bot"), session, "hello", run_config=RunConfig(model=model))
    assert isinstance(failure.value.cause, LeaseLost)
    assert "nothing was saved" in str(failure.value.cause)
    assert rows(db, "user_dana") == []
    with closing(sqlite3.connect(db)) as conn:  # the other holder's lease is left alone
        assert conn.execute("SELECT owner FROM multisessions_leases").fetchall() == [("someone else",)]


async def test_the_start_reads_only_the_capped_history_skipping_rows_that_are_not_json(db):
    io = turns_of(db)
    await io.begin("thread_cap", "me", 5, None)
    await io.commit("thread_cap", "me", TurnWrite([{"role": "user", "content": f"m{i}"} for i in range(10)]))
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO agent_messages (session_id, message_data) VALUES ('thread_cap', 'not json')"
        )
    start = await io.begin("thread_cap", "me", 5, 3)
    assert start is not None and not start.paused
    assert [item["content"] for item in start.history] == ["m7", "m8", "m9"]
    sdk = SQLiteSession("thread_cap", db, session_settings=SessionSettings(limit=3))
    assert await sdk.get_items() == start.history  # the SDK reads the same window
    sdk.close()


async def test_a_capped_session_sends_the_model_what_the_sdks_own_path_sends(db, tmp_path):
    cap = SessionSettings(limit=2)
    ours = ScriptedModel([reply(f"r{i}") for i in range(3)])
    sdks = ScriptedModel([reply(f"r{i}") for i in range(3)])
    session = SQLiteSession("user_cap", db, session_settings=cap)
    plain = SQLiteSession("user_cap", tmp_path / "plain.db", session_settings=cap)
    for text in ("one", "two", "three"):
        await run_turn(Agent(name="Bot"), session, text, run_config=RunConfig(model=ours))
        await Runner.run(Agent(name="Bot"), text, session=plain, run_config=RunConfig(model=sdks))
    assert user_texts(ours.calls[2].input) == ["two", "three"]  # "one" is outside the cap
    assert without_ids(ours.calls) == without_ids(sdks.calls)  # (ids count every reply made)
    plain.close()


async def test_a_session_waiting_for_approval_refuses_a_new_turn_at_the_start(db):
    await SQLiteStore(db).save_pending("user_wait", '{"state": "paused"}')
    start = await turns_of(db).begin("user_wait", "me", 5, None)
    assert start is not None and start.paused
    await turns_of(db).release("user_wait", "me")
    with pytest.raises(TurnFailed) as failure:
        await run_turn(
            Agent(name="Bot"),
            SQLiteSession("user_wait", db),
            "hi",
            run_config=RunConfig(model=ScriptedModel([])),
        )
    assert isinstance(failure.value.cause, AwaitingApproval)


def test_only_sessions_written_exactly_as_the_store_writes_take_the_short_path(db, tmp_path):
    store = SQLiteStore(db)
    assert store.turn_io(SQLiteSession("a", db)) is turns_of(db)
    assert store.turn_io(SQLitePool(db).session("a")) is turns_of(db)
    assert store.turn_io(SQLiteSession("a", tmp_path / "other.db")) is None  # another file
    assert store.turn_io(SQLiteSession("a")) is None  # in memory, private to its object
    assert store.turn_io(SQLiteSession("a", db, messages_table="mine")) is None  # other tables
    advanced = AdvancedSQLiteSession(session_id="a", db_path=db, create_tables=True)  # writes more tables
    assert store.turn_io(advanced) is None
    advanced.close()


def test_a_forked_child_opens_its_own_connection_and_can_drop_the_parents(tmp_path):
    # The parent's thread does not exist in a forked child: using or closing the parent's
    # SQLiteTurns there must not wait for it (it hung the crash test once).
    parents = [turns_of(tmp_path / f"f{i}.db") for i in range(3)]
    for io in parents:
        asyncio.run(io.begin("s", "parent", 5, None))

    def child() -> None:
        asyncio.run(parents[0].begin("t", "child", 5, None))
        for io in parents:
            io.close()
        os._exit(0)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(10)
    assert process.exitcode == 0
    with closing(sqlite3.connect(tmp_path / "f0.db")) as conn:
        owners = {r[0] for r in conn.execute("SELECT owner FROM multisessions_leases")}
    assert owners == {"parent", "child"}
    assert asyncio.run(parents[1].begin("u", "parent", 5, None)) is not None  # the parent's still works
