"""Isolation, handoff, rollback, concurrency and the inventory, on every store."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from agents import Agent, RunConfig
from agents.testing import ModelStep, ScriptedModel, function_call

import agent
from conftest import Cli
from helpers import reply, user_texts
from multisessions import (
    ConfigError,
    OfflineModel,
    StoreError,
    TurnFailed,
    delete_user_sessions,
    expire_sessions,
    list_sessions,
    open_store,
    read_all,
    run_turn,
)
from stores_fixture import make_store


def uid(name: str) -> str:
    """Session ids unique to this test run, so shared servers never mix tests."""
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def test_users_are_isolated(store):
    model = ScriptedModel([reply("a1"), reply("b1"), reply("a2")])
    config = RunConfig(model=model)
    alice, bob = (
        store.open(agent.user_session_id(uid("alice"))),
        store.open(agent.user_session_id(uid("bob"))),
    )
    await run_turn(Agent(name="Bot"), alice, "alice@example.com is my email", run_config=config)
    await run_turn(Agent(name="Bot"), bob, "bob@example.org is my email", run_config=config)
    await run_turn(Agent(name="Bot"), alice, "what is my email?", run_config=config)
    assert user_texts(model.calls[2].input) == ["alice@example.com is my email", "what is my email?"]
    assert len(await read_all(bob)) == 2


async def test_handoff_specialist_sees_triage_turn_and_resumes_from_a_new_store_object(store, tmp_path):
    agents_by_name = agent.support_agents()
    model = ScriptedModel(
        [
            reply("Hello"),
            [function_call("transfer_to_billing_agent", {}, call_id=uid("call"))],
            reply("Refunding"),
            reply("Still billing"),
        ]
    )
    config = RunConfig(model=model)
    session_id = agent.thread_session_id(uid("t"))
    session = store.open(session_id)
    for text in ("My name is Dana", "charged twice"):
        current = agents_by_name.get(
            await store.load_last_agent(session_id) or "", agents_by_name["Triage Agent"]
        )
        result = await run_turn(current, session, text, run_config=config)
        await store.save_last_agent(session_id, result.last_agent.name)
    assert user_texts(model.calls[2].input) == ["My name is Dana", "charged twice"]

    # Another process: a new store object (new client, new pool) on the same server or file.
    other = await make_store(store.kind, tmp_path, getattr(store.store, "key_prefix", ""))
    last = await other.load_last_agent(session_id)
    assert last == "Billing Agent"
    await run_turn(agents_by_name[last], other.open(session_id), "and now?", run_config=config)
    assert "billing specialist" in model.calls[3].system_instructions
    assert user_texts(model.calls[3].input) == ["My name is Dana", "charged twice", "and now?"]
    if store.kind in ("redis", "postgres"):
        await other.close()


async def test_a_failed_turn_leaves_the_session_unchanged(store):
    model = ScriptedModel([reply("ok"), ModelStep.raise_error(ConnectionError("model unreachable"))])
    session = store.open(agent.user_session_id(uid("r")))
    await run_turn(Agent(name="Bot"), session, "first", run_config=RunConfig(model=model))
    before = await read_all(session)
    with pytest.raises(TurnFailed):
        await run_turn(Agent(name="Bot"), session, "second", run_config=RunConfig(model=model))
    assert await read_all(session) == before


async def test_concurrent_turns_on_one_session_stay_paired(store):
    def answer(call):
        return reply("re: " + user_texts(call.input)[-1])

    model = ScriptedModel([ModelStep.respond(answer) for _ in range(20)])
    session = store.open(agent.thread_session_id(uid("burst")))
    await asyncio.gather(
        *(run_turn(Agent(name="Bot"), session, f"m{i}", run_config=RunConfig(model=model)) for i in range(20))
    )
    items = await read_all(session)
    assert len(items) == 40
    for question, answer_item in zip(items[::2], items[1::2], strict=True):
        assert answer_item["content"][0]["text"] == "re: " + question["content"]


async def test_inventory_lists_deletes_and_expires(store):
    user = uid("inv")
    ids = [
        agent.user_session_id(user),
        agent.feature_session_id("chat", user),
        agent.user_session_id(uid("other")),
    ]
    model = ScriptedModel([reply(f"r{i}") for i in range(3)])
    for session_id in ids:
        await run_turn(Agent(name="Bot"), store.open(session_id), "hi", run_config=RunConfig(model=model))
    listed = {r.session_id: r for r in await list_sessions(store)}
    assert set(ids) <= set(listed) and listed[ids[0]].items == 2
    assert listed[ids[0]].created is not None and listed[ids[0]].last_activity is not None
    assert listed[ids[0]].created <= listed[ids[0]].last_activity
    assert abs(listed[ids[0]].last_activity - datetime.now(UTC)) < timedelta(minutes=5)

    removed = await delete_user_sessions(store, user)
    assert {r.session_id for r in removed} == set(ids[:2])
    remaining = {r.session_id for r in await list_sessions(store)}
    assert ids[2] in remaining and not set(ids[:2]) & remaining
    assert await read_all(store.open(ids[0])) == []

    future = datetime.now(UTC) + timedelta(days=31)
    expired = await expire_sessions(store, 30, now=future)
    assert ids[2] in {r.session_id for r in expired}
    assert ids[2] not in {r.session_id for r in await list_sessions(store)}


@pytest.mark.parametrize(
    "url, expect",
    [
        ("redis://127.0.0.1:6390/0", "unreachable"),
        ("postgresql://postgres@127.0.0.1:5499/test", "unreachable"),
        ("mongodb://127.0.0.1", "unknown store URL"),
        ("redis://127.0.0.1:6379/15?ttl=soon", "whole number of seconds"),  # ConfigError: exit 2
    ],
)
async def test_bad_store_urls_are_one_clear_error(url, expect):

    with pytest.raises((StoreError, ConfigError), match=expect):
        store = open_store(url)
        await store.check()


@pytest.mark.parametrize(
    "url, modules",
    [
        ("redis://127.0.0.1:6379/15", ["redis", "redis.asyncio"]),
        ("postgresql://postgres@127.0.0.1:5432/test", ["asyncpg"]),
    ],
)
def test_a_missing_driver_is_one_line_naming_the_install(url, modules, cli: Cli, monkeypatch):
    # As on a machine without the driver: importing it fails. (tests/test_scripts.py starts the
    # script with no drivers at all, which proves none is imported at start-up.)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    result = cli("--store", url)
    assert result.code == 1
    assert len(result.err_lines) == 1
    assert "pip install -r requirements-stores.txt" in result.err


async def test_an_unescaped_slash_in_a_redis_password_is_named_as_the_likely_cause():
    store = open_store("redis://:p@ss/word@127.0.0.1:6390/0")
    try:
        with pytest.raises(StoreError) as failure:
            await store.check()
    finally:
        await store.close()
    assert "percent-encode / ? # @ in the user info" in str(failure.value)
    assert "ss/word" not in str(failure.value)


async def test_a_sqlalchemy_store_on_a_sqlite_file_takes_turns_too(tmp_path):
    # SQLAlchemySession over sqlite+aiosqlite: the lease SQL must not be PostgreSQL's.
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'aio.db'}")
    session = store.open("user_ada")
    try:
        for message in ("My name is Ada.", "What's my name?"):
            result = await run_turn(
                Agent(name="Bot"), session, message, run_config=RunConfig(model=OfflineModel())
            )
        assert result.final_output == "Your name is Ada."
        assert len(await read_all(session)) == 4
    finally:
        await store.close()
