"""A user's data on request: export everything kept for a user, forget it all, touch nobody else.

On every store (and encrypted): the raw store (SQLite rows, Redis keys, PostgreSQL rows) is
dumped before and after a forget, and everything not belonging to the forgotten user must be
byte for byte what it was. Then turns running during a forget, the command line and HTTP.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from agents import Agent, RunConfig
from agents.testing import ModelStep, ScriptedModel

from conftest import Cli
from helpers import reply
from multisessions import (
    EncryptedStore,
    Ledger,
    RedisStore,
    SQLiteStore,
    SQLStore,
    dated_session_id,
    export_user,
    feature_session_id,
    forget_user,
    run_turn,
    thread_session_id,
    user_session_id,
)
from multisessions.approvals import Approval, PausedTurn
from multisessions.effects import session_prefix
from multisessions.naming import memory_scope, user_scope
from multisessions.stores import Summary
from serve_fixture import auth, serving
from stores_fixture import postgres_url

SECRET = "s" * 40
DAY = date(2024, 12, 15)
PEOPLE = [
    (None, "alice"),
    (None, "alice2"),
    (None, "alice_x"),
    (None, "Alice"),
    (None, "acme:alice"),  # a user literally named so: not Alice of tenant acme
    (None, "bob"),
    ("acme", "alice"),  # the same name in another tenant: another person
    ("other", "alice"),
]
"""Who the filled store holds: the forgotten user (no tenant, ``alice``) and every look-alike."""


def ids_of(tenant: str | None, user: str) -> dict[str, str]:
    return {
        "user": user_session_id(user, tenant=tenant),
        "support": feature_session_id("support", user, tenant=tenant),
        "dated": dated_session_id(user, DAY, tenant=tenant),
        "refunds": feature_session_id("refunds", user, tenant=tenant),  # only a paused turn, no items
    }


def paused(session_id: str) -> str:
    call = Approval(session_id, "Billing Agent", "refund", '{"order": "5512"}', "call-1")
    item = {"role": "user", "content": "refund order 5512"}
    return PausedTurn("Triage Agent", '{"state": "of the SDK"}', [item], [call]).dumps()


def config() -> RunConfig:
    return RunConfig(model=ScriptedModel([reply(f"noted {n}") for n in range(20)]))


async def fill(store: Any, people: list[tuple[str | None, str]] = PEOPLE) -> None:
    """Per person: a turn (the store's own turn path: receipts, current agent), two sessions written
    through the SDK, a paused turn on one of them and on a session with nothing else, side effects."""
    for tenant, user in people:
        ids = ids_of(tenant, user)
        await run_turn(
            Agent(name="Triage Agent"), store.open(ids["user"]), f"I am {user}", run_config=config()
        )
        for name in ("support", "dated"):
            await store.open(ids[name]).add_items([{"role": "user", "content": f"{user} in {name}"}])
        await store.save_last_agent(ids["support"], "Billing Agent")
        for name in ("support", "refunds"):
            await store.save_pending(ids[name], paused(ids[name]))
        await Ledger(store, ids["refunds"]).once("refund", "call-1", "5512")
        await Ledger(store, ids["user"]).once("email", "call-2", f"{user}@example.com")
        await store.save_memory(user_scope(user, tenant), {"email": f"{user}@example.com"})
        await store.save_summary(ids["user"], Summary(f"- name: {user}", 0))
    await store.open(thread_session_id("t1")).add_items([{"role": "user", "content": "a shared thread"}])


ALICE = ids_of(None, "alice")
EXPECTED = {
    "sessions": 4,
    "items": 4,
    "current_agents": 2,
    "paused_turns": 2,
    "side_effects": 2,
    "summaries": 1,
    "memory_facts": 1,
}
"""What ``fill`` keeps for Alice: a turn of 2 items and two single items; an agent on the user
and the support sessions; paused turns on support and refunds; one effect on user and refunds;
a summary of the user session; one remembered fact."""


def base_of(store: Any) -> Any:
    while not isinstance(store, SQLiteStore | RedisStore | SQLStore):
        store = store.store  # the test's tracking wrapper, an EncryptedStore
    return store


async def dump(store: Any) -> Counter[tuple[Any, ...]]:
    """Every row (SQLite, PostgreSQL) or key, list and hash field (Redis) the store holds."""
    base = base_of(store)
    entries: Counter[tuple[Any, ...]] = Counter()
    if isinstance(base, SQLiteStore):
        conn = sqlite3.connect(base.db_path)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            entries.update((table, *row) for row in conn.execute(f"SELECT * FROM {table}"))
        conn.close()
    elif isinstance(base, RedisStore):
        client = base.client
        async for key in client.scan_iter(match=f"{base.key_prefix}*"):
            kind = (await client.type(key)).decode()
            if kind == "hash":
                entries.update(("hash", key, k, v) for k, v in (await client.hgetall(key)).items())
            elif kind == "list":
                entries[("list", key, tuple(await client.lrange(key, 0, -1)))] += 1
            elif kind == "zset":
                entries.update(("zset", key, member) for member in await client.zrange(key, 0, -1))
            else:
                entries[(kind, key, await client.get(key))] += 1
    else:
        import asyncpg

        conn = await asyncpg.connect(postgres_url())
        for table in (
            "agent_sessions",
            "agent_messages",
            "agent_session_last_agent",
            "agent_session_pending",
        ):
            entries.update((table, *row) for row in await conn.fetch(f"SELECT * FROM {table}"))
        for table in (
            "multisessions_effects",
            "multisessions_leases",
            "multisessions_memory",
            "multisessions_summaries",
            "multisessions_conversations",
        ):
            if await conn.fetchval("SELECT to_regclass($1)", table):
                entries.update((table, *row) for row in await conn.fetch(f"SELECT * FROM {table}"))
        await conn.close()
    return entries


def belongs(entry: tuple[Any, ...], session_ids: list[str], prefix: str) -> bool:
    """Whether a row or key holds one of ``session_ids`` (a Redis key names it after the prefix)."""
    names = set()
    for sid in session_ids:
        names |= {sid, f"{prefix}:{sid}", f"{prefix}:{sid}:messages", f"{prefix}:{sid}:counter"}
        names |= {
            f"{prefix}/{space}/{sid}"
            for space in ("last_agent", "committed", "lease", "summary", "conversation")
        }
    scope = memory_scope(session_ids[0]) if session_ids else None  # a user's ids share one scope
    if scope is not None:
        names |= {scope, f"{prefix}/memory/{scope}", f"{prefix}/conversations/{scope}"}
    for value in entry:
        text = value.decode() if isinstance(value, bytes) else value
        if isinstance(text, str) and (
            text in names or text.startswith(tuple(map(session_prefix, session_ids)))
        ):
            return True
    return False


async def cleanup(store: Any) -> None:
    """Server stores outlive the test: leave nobody there (a SQLite file goes with the test)."""
    if isinstance(base_of(store), SQLiteStore):
        return
    for tenant, user in PEOPLE:
        await forget_user(store, user, tenant=tenant)
    await store.delete(thread_session_id("t1"))


async def test_encrypted_export_then_forget_then_export_gives_a_document_with_no_sessions(store):
    users = EncryptedStore(store, SECRET)
    await fill(users, [(None, "alice"), (None, "bob")])
    try:
        before = await export_user(users, "alice")
        assert len(before["sessions"]) == 4
        user = next(s for s in before["sessions"] if s["session_id"] == ALICE["user"])
        assert user["items"][0]["content"] == "I am alice"  # decrypted
        removed = await forget_user(users, "alice")
        assert removed.as_dict() == EXPECTED
        after = await export_user(users, "alice")
        assert after["sessions"] == [] and after["user"] == "alice"
        assert len((await export_user(users, "bob"))["sessions"]) == 4
    finally:
        await forget_user(users, "bob")
        await store.delete(thread_session_id("t1"))


def check_alice_export(document: dict[str, Any]) -> None:
    """Everything ``fill`` kept for Alice, and nothing of anyone else."""
    json.dumps(document)  # one JSON document
    assert (document["user"], document["tenant"]) == ("alice", None)
    sessions = {s["session_id"]: s for s in document["sessions"]}
    assert sorted(sessions) == sorted(ALICE.values())
    user = sessions[ALICE["user"]]
    assert (user["kind"], user["current_agent"]) == ("user", "Triage Agent")
    assert user["items"][0]["content"] == "I am alice" and len(user["items"]) == 2  # decrypted
    assert user["created"] and user["last_activity"] and user["paused_turn"] is None
    assert user["side_effects"] == [{"kind": "email", "call_id": "call-2", "value": "alice@example.com"}]
    refunds = sessions[ALICE["refunds"]]
    assert refunds["items"] == [] and refunds["created"] is None
    assert refunds["paused_turn"]["approvals"][0]["tool"] == "refund"
    assert refunds["paused_turn"]["items"] == [{"role": "user", "content": "refund order 5512"}]
    assert sessions[ALICE["support"]]["current_agent"] == "Billing Agent"
    assert sessions[ALICE["dated"]]["kind"] == "dated"
    assert document["memory"] == {"email": "alice@example.com"}
    assert user["summary"] == {"text": "- name: alice", "covered_items": 0}
    assert "alice2" not in json.dumps(document) and "acme" not in json.dumps(document)


async def check_forget_touches_nothing_else(store: Any) -> None:
    await fill(store)
    try:
        check_alice_export(await export_user(store, "alice"))
        prefix = getattr(base_of(store), "key_prefix", "")
        before = await dump(store)
        mine = Counter({e: n for e, n in before.items() if belongs(e, list(ALICE.values()), prefix)})
        assert len(mine) >= 10  # items, sessions, agents, paused turns, effects (and receipts on Redis)

        would = await forget_user(store, "alice", dry_run=True)
        assert await dump(store) == before  # a dry run removes nothing
        removed = await forget_user(store, "alice")

        after = await dump(store)
        assert after == before - mine  # every other row, key and field exactly as it was
        assert removed.as_dict() == would.as_dict() == EXPECTED
        assert await forget_user(store, "alice") == type(removed)()  # nothing left to find
        assert (await export_user(store, "alice"))["sessions"] == []
    finally:
        await cleanup(store)


async def test_export_has_all_of_the_user_and_forget_removes_it_keeping_every_other_byte(store):
    await check_forget_touches_nothing_else(store)


async def test_the_same_on_an_encrypted_store(tmp_path):
    await check_forget_touches_nothing_else(EncryptedStore(SQLiteStore(tmp_path / "sessions.db"), SECRET))


async def test_a_turn_running_when_forget_starts_finishes_first_and_is_forgotten_too(store):
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(call: Any) -> Any:
        inside.set()
        await release.wait()
        return reply("noted your card")

    await fill(store, [(None, "alice"), (None, "bob")])
    try:
        bob_before = await export_user(store, "bob")
        bot = Agent(name="Triage Agent")
        slow_config = RunConfig(model=ScriptedModel([ModelStep.respond(slow)]))
        running = asyncio.create_task(
            run_turn(bot, store.open(ALICE["user"]), "card 4242", run_config=slow_config)
        )
        await asyncio.wait_for(inside.wait(), 5)
        forgetting = asyncio.create_task(forget_user(store, "alice"))
        await asyncio.sleep(0.1)
        assert not forgetting.done()  # it waits for the running turn
        # Meanwhile another turn starts a session of Alice's that did not exist, and ends.
        chat = feature_session_id("chat", "alice")
        await run_turn(bot, store.open(chat), "hello", run_config=config())
        release.set()
        result = await asyncio.wait_for(running, 10)
        assert result.final_output == "noted your card"  # the running turn was saved...
        removed = await asyncio.wait_for(forgetting, 10)
        assert removed.sessions == 5 and removed.items == 4 + 2 + 2  # ...then removed, the new session too
        assert (await export_user(store, "alice"))["sessions"] == []
        prefix = getattr(base_of(store), "key_prefix", "")
        assert not [e for e in await dump(store) if belongs(e, [*ALICE.values(), chat], prefix)]
        bob_after = await export_user(store, "bob")
        assert bob_after["sessions"] == bob_before["sessions"]
    finally:
        await forget_user(store, "bob")
        await store.delete(thread_session_id("t1"))


async def test_exports_and_forgets_of_one_user_at_once_never_wait_on_each_other(db):
    store = SQLiteStore(db)
    await fill(store, [(None, "alice"), (None, "bob")])
    together = [export_user(store, "alice"), forget_user(store, "alice"), forget_user(store, "alice")]
    exported, *removed = await asyncio.wait_for(asyncio.gather(*together), 10)
    assert len(exported["sessions"]) in (0, 4)  # before or after the forget, never half
    assert sum(r.sessions for r in removed) == 4
    assert (await export_user(store, "alice"))["sessions"] == []
    assert len((await export_user(store, "bob"))["sessions"]) == 4


# --- The command line -------------------------------------------------------------------------


def filled(db: Path) -> Path:
    asyncio.run(fill(SQLiteStore(db)))
    return db


def test_users_export_prints_one_json_document_or_writes_it_to_a_file(cli: Cli, db: Path, tmp_path: Path):
    filled(db)
    printed = cli("users", "export", "--user", "alice", "--db", str(db))
    assert printed.code == 0 and printed.err == ""
    document = json.loads(printed.out)
    assert sorted(s["session_id"] for s in document["sessions"]) == sorted(ALICE.values())
    acme = json.loads(cli("users", "export", "--user", "alice", "--tenant", "acme", "--db", str(db)).out)
    assert sorted(s["session_id"] for s in acme["sessions"]) == sorted(ids_of("acme", "alice").values())

    written = cli("users", "export", "--user", "alice", "--db", str(db), "--output", str(tmp_path / "a.json"))
    assert (
        written.code == 0 and written.out == f"exported user 'alice': 4 session(s) to {tmp_path / 'a.json'}\n"
    )
    on_file = json.loads((tmp_path / "a.json").read_text())
    assert on_file["sessions"] == document["sessions"]


def test_users_forget_says_what_it_removed_and_a_dry_run_removes_nothing(cli: Cli, db: Path):
    filled(db)
    line = (
        "user 'alice': 4 session(s), 4 items, 2 current agent(s), 2 paused turn(s), 2 side effect(s), "
        "1 summary(ies), 1 memory fact(s)\n"
    )
    dry = cli("users", "forget", "--user", "alice", "--db", str(db), "--dry-run")
    assert (dry.code, dry.out) == (0, "would remove " + line)
    done = cli("users", "forget", "--user", "alice", "--db", str(db))
    assert (done.code, done.out) == (0, "removed " + line)
    assert json.loads(cli("users", "export", "--user", "alice", "--db", str(db)).out)["sessions"] == []
    bob = json.loads(cli("users", "export", "--user", "bob", "--db", str(db)).out)
    assert len(bob["sessions"]) == 4


def test_users_commands_fail_in_one_line(cli: Cli, db: Path, tmp_path: Path):
    filled(db)
    cases = [
        (("users", "forget", "--user", " alice", "--db", str(db)), 1, "leading or trailing whitespace"),
        (("users", "export", "--db", str(db)), 2, "--user"),
        (("users", "export", "--user", "alice", "--tenant", "", "--db", str(db)), 1, "tenant"),
        (
            ("users", "export", "--user", "a", "--db", str(db), "--output", str(tmp_path / "no" / "f")),
            1,
            "--output",
        ),
        (("users", "forget", "--user", "alice", "--db", str(tmp_path / "none.db")), 1, "no database"),
    ]
    for args, code, says in cases:
        ran = cli(*args)
        assert ran.code == code and len(ran.err_lines) == 1 and says in ran.err, (args, ran.err)
        assert "Traceback" not in ran.err


# --- Over HTTP: the caller, and only the caller ------------------------------------------------


async def test_a_caller_exports_and_forgets_only_themselves_over_http(db):
    async with serving(db) as client:
        for who in ("alice", "bob", "acme/alice"):
            await client.post(
                "/api/conversations/support/messages", json={"message": "hi"}, headers=auth(who)
            )
        await client.post("/api/conversations/sales/messages", json={"message": "hi"}, headers=auth("alice"))
        mine = await client.get("/api/me/export?user=bob", headers=auth("alice"))  # no way to name another
        assert mine.status_code == 200
        assert [s["session_id"] for s in mine.json()["sessions"]] == [
            "sales_feature_user_alice",
            "support_feature_user_alice",
        ]
        assert (await client.get("/api/me/export")).status_code == 401
        assert (await client.delete("/api/me")).status_code == 401

        gone = await client.delete("/api/me", headers=auth("alice"))
        assert gone.status_code == 200
        assert gone.json()["removed"] == {
            "sessions": 2,
            "items": 4,
            "current_agents": 2,
            "paused_turns": 0,
            "side_effects": 0,
            "summaries": 0,
            "memory_facts": 0,
        }
        assert (await client.get("/api/me/export", headers=auth("alice"))).json()["sessions"] == []
        for who in ("bob", "acme/alice"):
            theirs = (await client.get("/api/me/export", headers=auth(who))).json()["sessions"]
            assert len(theirs) == 1 and len(theirs[0]["items"]) == 2


async def test_a_caller_sees_and_forgets_only_their_own_memory_over_http(db):
    store = SQLiteStore(db)
    for tenant, user in [(None, "alice"), (None, "bob"), ("acme", "alice")]:
        await store.save_memory(user_scope(user, tenant), {"email": f"{user}.{tenant}@example.com"})
    async with serving(db) as client:
        assert (await client.get("/api/me/memory")).status_code == 401
        mine = await client.get("/api/me/memory?user=bob", headers=auth("alice"))  # no way to name another
        assert mine.json() == {"user": "alice", "tenant": None, "memory": {"email": "alice.None@example.com"}}
        gone = await client.delete("/api/me/memory", headers=auth("alice"))
        assert gone.json()["removed_facts"] == 1
        assert (await client.get("/api/me/memory", headers=auth("alice"))).json()["memory"] == {}
    assert await store.load_memory(user_scope("bob")) == {"email": "bob.None@example.com"}
    assert await store.load_memory(user_scope("alice", "acme")) == {"email": "alice.acme@example.com"}


def test_users_memory_lists_shows_and_forgets_one_users_memory(cli: Cli, db: Path):
    import asyncio

    store = SQLiteStore(db)
    for tenant, user in [(None, "alice"), (None, "alice2"), ("acme", "alice")]:
        asyncio.run(store.save_memory(user_scope(user, tenant), {"email": f"{user}@x", "name": user}))
    listed = cli("users", "memory", "--db", str(db))
    assert listed.out.splitlines() == [
        "alice  2 fact(s)",
        "alice2  2 fact(s)",
        f"2 user(s) with memory in no tenant of SQLite file {db}",
    ]
    shown = cli("users", "memory", "--user", "alice", "--tenant", "acme", "--db", str(db))
    assert shown.out.splitlines() == [
        "email: alice@x",
        "name: alice",
        "2 fact(s) remembered for user 'alice' in tenant 'acme'",
    ]
    gone = cli(
        "--db", str(db), "users", "memory", "--user", "alice", "--delete"
    )  # options before the command too
    assert gone.code == 0 and gone.out == "removed 2 memory fact(s) of user 'alice' in no tenant\n"
    assert asyncio.run(store.memory_scopes()) == {user_scope("alice2"): 2, user_scope("alice", "acme"): 2}
    refused = cli("users", "memory", "--delete", "--db", str(db))
    assert refused.code == 2 and refused.err_lines == [
        "error: users memory --delete needs --user USER (see --help)"
    ]


async def test_another_sessions_side_effect_under_another_key_never_stops_a_users_export(db):
    plain = SQLiteStore(db)
    await Ledger(plain, thread_session_id("shared")).once("refund", "call-9", "5512")  # not this key's
    users = EncryptedStore(plain, SECRET)
    await fill(users, [(None, "alice")])
    assert len((await export_user(users, "alice"))["sessions"]) == 4
    assert (await forget_user(users, "alice")).side_effects == 2
    assert await plain.effect_keys() == [f"{session_prefix(thread_session_id('shared'))}refund\x1fcall-9"]
