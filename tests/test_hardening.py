"""Store settings that cannot point elsewhere, inventory commands that report what they did, and a
command line that fails in one line where it used to hang or lie."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

from multisessions import StoreError
from multisessions.stores import RedisStore
from multisessions.stores.redis_store import glob_literal
from stores_fixture import REDIS_URL, unavailable

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def store_args(store) -> list[str]:
    from stores_fixture import postgres_url

    if store.kind in ("sqlite", "pooled"):
        return ["--db", str(store.db_path)]
    if store.kind == "redis":
        return ["--store", f"{REDIS_URL}?key_prefix={store.key_prefix}"]
    return ["--store", postgres_url()]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


async def redis_store(prefix: str) -> RedisStore:
    store = RedisStore(f"{REDIS_URL}?key_prefix={prefix}")
    try:
        await store.check()
    except StoreError as exc:
        unavailable("redis", str(exc))
    return store


# --- A Redis key prefix is a literal ----------------------------------------------------------


def test_glob_characters_are_escaped():
    assert glob_literal("a*b?c[d]e\\f") == "a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_literal("multi_sessions") == "multi_sessions"


@pytest.mark.parametrize("pattern", ["?", "*", "[a-z]"])
async def test_a_prefix_with_glob_characters_never_reaches_another_prefix(pattern, cli):
    tag = uuid.uuid4().hex[:8]
    victim = await redis_store(f"v{tag}k")
    try:
        await victim.open("user_alice").add_items([{"role": "user", "content": "victim's"}])
        attacker = f"{REDIS_URL}?key_prefix=v{tag}{pattern}"
        listed = await asyncio.to_thread(cli, "sessions", "list", "--store", attacker)
        assert listed.code == 0 and "0 session(s)" in listed.out, listed
        deleted = await asyncio.to_thread(cli, "sessions", "delete", "user_alice", "--store", attacker)
        assert deleted.code == 1 and "no session 'user_alice'" in one_line(deleted.err)
        assert len(await victim.open("user_alice").get_items()) == 1
    finally:
        await victim.delete("user_alice")
        await victim.close()


async def test_a_prefix_lists_only_its_own_sessions_not_a_longer_prefixs():
    from agents.extensions.memory import RedisSession

    tag = uuid.uuid4().hex[:8]
    short = await redis_store(f"p{tag}")
    # Another app, with the SDK alone, under prefix "p<tag>:x": its key is "p<tag>:x:user_bob".
    theirs = RedisSession("user_bob", redis_client=short.client, key_prefix=f"p{tag}:x")
    try:
        await theirs.add_items([{"role": "user", "content": "hi"}])
        await short.open("user_ann").add_items([{"role": "user", "content": "hi"}])
        assert [row.session_id for row in await short.list_sessions()] == ["user_ann"]
    finally:
        await theirs.clear_session()
        await short.delete("user_ann")
        await short.close()


@pytest.mark.parametrize("prefix", ["p:acme", "a/b", "a%20b", ""])
def test_a_prefix_that_could_alias_another_prefixs_keys_is_refused(prefix, cli):
    ran = cli("sessions", "list", "--store", f"{REDIS_URL}?key_prefix={prefix}")
    assert ran.code == 2 and "key_prefix=" in one_line(ran.err), ran


@pytest.mark.parametrize("db", ["l5", "5x", "-1", "99999999999", "1.5"])
def test_a_mistyped_redis_database_is_one_line_not_db_0(db, cli):
    ran = cli("sessions", "list", "--store", f"redis://127.0.0.1:6379/{db}")
    assert ran.code == 2 and f"the database {db!r} must be a number" in one_line(ran.err), ran
    ran = cli("sessions", "list", "--store", f"redis://127.0.0.1:6379?db={db}")
    assert ran.code == 2 and "must be a number" in one_line(ran.err), ran


def test_a_database_the_server_does_not_have_is_one_line(cli):
    ran = cli("sessions", "list", "--store", "redis://127.0.0.1:6379/9999")
    if "unreachable" in ran.err:
        pytest.skip("no Redis here")
    assert ran.code == 1 and "has no database 9999" in one_line(ran.err), ran


# --- Inventory commands report what they really did -------------------------------------------


async def test_a_delete_that_removed_nothing_is_an_error_not_a_count(store, cli, monkeypatch):
    session_id = f"user_keep{uuid.uuid4().hex[:6]}"
    await store.open(session_id).add_items([{"role": "user", "content": "still here"}])

    async def removes_nothing(self, session_id: str) -> int:
        return 0

    monkeypatch.setattr(type(store.store), "delete", removes_nothing)
    ran = await asyncio.to_thread(cli, "sessions", "delete", session_id, *store_args(store))
    assert ran.code == 1 and "still in" in one_line(ran.err), ran
    assert "removed 1 session" not in ran.out
    monkeypatch.undo()
    ran = await asyncio.to_thread(cli, "sessions", "delete", session_id, *store_args(store))
    assert ran.code == 0 and "removed 1 session(s), 1 items" in ran.out, ran


# --- The command line: a FIFO is one line, read-only listing works ----------------------------


def test_a_fifo_as_db_is_one_line_and_does_not_hang(tmp_path, cli):
    fifo = tmp_path / "sessions.db"
    os.mkfifo(fifo)
    for argv in (["sessions", "list"], ["sessions", "show", "user_a"], ["naming"]):
        ran = cli(*argv, "--db", str(fifo))
        assert ran.code == 1 and "not a regular file" in one_line(ran.err), ran


def test_listing_and_showing_work_on_a_read_only_filesystem(db, cli, monkeypatch):
    import sqlite3

    assert cli("naming", "--db", str(db)).code == 0
    real = sqlite3.connect

    def read_only_filesystem(target, *args, **kwargs):
        # Nothing can be created or written: only an immutable read opens (the WAL's -shm cannot).
        if "immutable=1" not in str(target):
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", read_only_filesystem)
    listed = cli("sessions", "list", "--tenant", "demo", "--db", str(db))
    assert listed.code == 0 and "4 session(s)" in listed.out, listed
    shown = cli("sessions", "show", "demo:user_123", "--db", str(db))
    assert shown.code == 0 and "Sam" in shown.out, shown
    written = cli("naming", "--db", str(db))
    assert written.code == 1 and one_line(written.err), written


async def test_chat_exits_1_when_its_last_turn_failed_and_0_when_a_later_one_answered(db, capsys):
    import io

    from agents import Agent
    from agents.testing import ModelStep, ScriptedModel

    from helpers import reply, user_texts
    from multisessions import SQLiteStore
    from multisessions.chat import chat

    def answer(call):
        if "fail" in user_texts(call.input)[-1]:
            raise ConnectionError("model server went away")
        return reply("fine")

    model = ScriptedModel([ModelStep.respond(answer) for _ in range(8)])
    store, agents = SQLiteStore(db), {"Bot": Agent(name="Bot")}

    async def chatting(lines: str) -> int:
        return await chat(store, model, agents, "ada", first_agent="Bot", stdin=io.StringIO(lines))

    assert await chatting("please fail\n") == 1
    assert await chatting("please fail\nhello\n") == 0
    assert await chatting("hello\nplease fail\n/quit\n") == 1
    assert "model server went away" in capsys.readouterr().out
