"""Encryption is a property of the store: every entry point (the command line, its chat and
approvals, serve.py) opens the store through ``store_for(settings)``, so with
``SESSION_ENCRYPTION_KEY`` set no path writes plaintext, and a wrong key is one clear line that
changes nothing, on every store."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import sys
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, RunConfig
from agents.testing import ScriptedModel

import agent
from helpers import reply
from multisessions import OfflineModel, Settings, TurnFailed, run_turn, store_for, user_session_id
from multisessions.cli import Lesson, main
from multisessions.stores import EncryptedStore
from serve_fixture import auth, events_of, serving
from stores_fixture import REDIS_URL, postgres_url

SECRET = "k" * 16 + "-test-secret-" + "z" * 16
OTHER = "o" * 16 + "-another-secret-" + "q" * 16
# The real lesson's agents: the billing agent's refund waits for a supervisor (a paused turn).
LESSON = Lesson(
    agent.DEMOS,
    agent.EXTRA_DEMOS,
    agents=partial(agent.support_agents, refunds=True),
    first_agent="Triage Agent",
)


def letters(n: int = 8) -> str:
    """A fresh word of lowercase letters: a canary that no Fernet token holds by chance with its capital."""
    return "".join(chr(97 + int(c, 16)) for c in uuid.uuid4().hex[:n])


def cli(capsys, *argv: str, stdin: str = "", settings: Settings) -> tuple[int, str, str]:
    old, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        code = main(list(argv), LESSON, settings)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err


async def acli(capsys, *argv: str, stdin: str = "", settings: Settings) -> tuple[int, str, str]:
    return await asyncio.to_thread(cli, capsys, *argv, stdin=stdin, settings=settings)


def url_of(store) -> str | None:
    if store.kind == "redis":
        return f"{REDIS_URL}?key_prefix={store.key_prefix}"
    if store.kind == "postgres":
        return postgres_url()
    return None


def store_args(store) -> list[str]:
    url = url_of(store)
    return ["--store", url] if url else ["--db", str(store.db_path)]


def db_of(store, tmp_path: Path) -> Path:
    return Path(store.db_path) if store.kind in ("sqlite", "pooled") else tmp_path / "unused.db"


async def raw_rows(store) -> set[str]:
    """Every row, list, hash and value the store itself holds (messages, paused turns, last agents,
    ledger, memory), read below every session class, one string each."""
    found: set[str] = set()
    if store.kind in ("sqlite", "pooled"):
        with sqlite3.connect(store.db_path) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                found.update(f"{table}: {row!r}" for row in conn.execute(f"SELECT * FROM {table}"))
        return found
    if store.kind == "redis":
        client = store.client
        async for key in client.scan_iter(match=f"{store.key_prefix}*"):  # a test prefix: no glob characters
            kind = await client.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "list":
                found.add(f"{key!r}: {await client.lrange(key, 0, -1)!r}")
            elif kind == "hash":
                found.add(f"{key!r}: {await client.hgetall(key)!r}")
            elif kind == "string":
                found.add(f"{key!r}: {await client.get(key)!r}")
        return found
    from sqlalchemy import text

    async with store.engine.connect() as conn:
        names = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        for (table,) in names.all():
            rows = (await conn.execute(text(f'SELECT * FROM public."{table}"'))).all()
            found.update(f"{table}: {tuple(row)!r}" for row in rows)
    return found


async def raw_dump(store, before: set[str] | frozenset[str] = frozenset()) -> str:
    """What the store holds that it did not hold ``before`` (this process's PostgreSQL database
    also holds other tests' plaintext sessions)."""
    return "\n".join(sorted(await raw_rows(store) - before))


def session_rows(dump: str) -> list[str]:
    """A dump without the turn logs of streamed turns (multisessions/streams.py)."""
    return [
        line for line in dump.splitlines() if "multisessions_turn_" not in line and "/turnlog/" not in line
    ]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


async def test_every_entry_point_writes_only_ciphertext_with_the_key(store, capsys, tmp_path):
    name, card, order = letters().capitalize(), f"card {letters()}", f"Order-{letters()}"
    settings = Settings(encryption_key=SECRET, store_url=url_of(store))
    user = f"dana{letters(4)}"
    earlier = await raw_rows(store)
    # The CLI's chat; the second turn pauses for a supervisor (the paused turn holds the conversation).
    chat = f"My name is {name}, my {card}.\nI was charged twice for order 5512, please refund it.\n"
    code, out, err = await acli(
        capsys, "chat", "--user", user, *store_args(store), stdin=chat, settings=settings
    )
    assert code == 0 and "paused: refund_order" in out, out + err
    session_id = user_session_id(user)
    store.opened.add(session_id)
    assert name not in await raw_dump(store, earlier) and card not in await raw_dump(store, earlier)
    code, out, err = await acli(capsys, "approvals", "list", *store_args(store), settings=settings)
    assert code == 0 and f"{session_id}  Billing Agent: refund_order" in out, err

    # serve.py, on the same store with the same settings: plain and streamed turns.
    async with serving(db_of(store, tmp_path), store_url=url_of(store), encryption_key=SECRET) as client:
        plain = await client.post(
            "/api/conversations/one/messages",
            json={"message": f"My order is {order}."},
            headers=auth("alice"),
        )
        streamed = await client.post(
            "/api/conversations/two/messages",
            json={"message": f"My name is {name}."},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
        history = await client.get("/api/conversations/one/messages", headers=auth("alice"))
    assert plain.status_code == 200 and events_of(streamed.text)[-1][0] == "done", streamed.text
    store.opened.update({"one_feature_user_alice", "two_feature_user_alice"})
    assert any(order in row["text"] for row in history.json()["messages"])  # read back, decrypted
    raw = await raw_dump(store, earlier)
    for secret in (name, card, order, "refund_order", "5512", "charged twice"):
        assert secret not in raw, secret

    # The demos, through the same command line (the refund demo pauses and approves a turn).
    code, out, err = await acli(capsys, "refund", *store_args(store), settings=settings)
    assert code == 0 and "approve" in out, err
    store.opened.add("demo:thread_refund-5512")
    assert "name is Dana" not in await raw_dump(store, earlier)

    # What one entry point wrote, the others read: the supervisor approves, the CLI shows it all.
    code, out, err = await acli(
        capsys, "approvals", "approve", session_id, *store_args(store), settings=settings
    )
    assert code == 0 and "approved" in out, err
    code, out, err = await acli(
        capsys, "sessions", "show", "one_feature_user_alice", *store_args(store), settings=settings
    )
    assert code == 0 and order in out, err
    raw = await raw_dump(store, earlier)
    # The refund's ledger entry too: its value, the order id, is stored only as a token.
    assert "refund issued" not in raw and not re.search(r"""['"]5512['"]""", raw)


async def test_a_wrong_key_is_one_line_and_never_an_empty_history_or_a_split_session(store, capsys, tmp_path):
    secret_name = letters().capitalize()
    session_id = "one_feature_user_alice"
    store.opened.add(session_id)
    right = EncryptedStore(store, SECRET)
    await run_turn(
        Agent(name="Triage Agent"),
        right.open(session_id),
        f"My name is {secret_name}.",
        run_config=RunConfig(model=OfflineModel()),
    )
    before = await raw_dump(store)
    wrong = Settings(encryption_key=OTHER, store_url=url_of(store))

    code, out, err = await acli(capsys, "sessions", "show", session_id, *store_args(store), settings=wrong)
    assert code == 1 and "cannot be decrypted with this SESSION_ENCRYPTION_KEY" in one_line(err), out + err
    assert "items" not in out  # no count of what cannot be shown
    code, out, err = await acli(
        capsys,
        "chat",
        "--user",
        "alice",
        "--feature",
        "one",
        *store_args(store),
        stdin="hello\n",
        settings=wrong,
    )
    assert code == 1 and "cannot be decrypted" in one_line(err), out + err
    async with serving(db_of(store, tmp_path), store_url=url_of(store), encryption_key=OTHER) as client:
        history = await client.get("/api/conversations/one/messages", headers=auth("alice"))
        turn = await client.post(
            "/api/conversations/one/messages", json={"message": "hi"}, headers=auth("alice")
        )
        streamed = await client.post(
            "/api/conversations/one/messages",
            json={"message": "hi"},
            headers={**auth("alice"), "Accept": "text/event-stream"},
        )
    assert history.status_code == 500 and "SESSION_ENCRYPTION_KEY" in history.json()["detail"]
    assert turn.status_code == 500 and "SESSION_ENCRYPTION_KEY" in turn.json()["detail"]
    assert events_of(streamed.text)[-1][0] == "error" and "SESSION_ENCRYPTION_KEY" in streamed.text, (
        streamed.text
    )
    # Nothing appended under the other key; the refused streamed turn's log (its `turn` and
    # `error` events, sealed) is kept beside the sessions, not in one.
    assert session_rows(await raw_dump(store)) == session_rows(before)
    # And the right key still reads the one conversation, whole.
    code, out, err = await acli(
        capsys,
        "sessions",
        "show",
        session_id,
        *store_args(store),
        settings=Settings(encryption_key=SECRET, store_url=url_of(store)),
    )
    assert code == 0 and secret_name in out and "2 items" in out, err


async def test_plaintext_left_in_an_encrypted_store_is_refused_not_sent_to_the_model(store):
    session_id = user_session_id(f"plain{letters(4)}")
    await store.open(session_id).add_items([{"role": "user", "content": "written without the key"}])
    store.opened.add(session_id)
    secure = EncryptedStore(store, SECRET)
    model = ScriptedModel([reply("never sent")])
    with pytest.raises(TurnFailed, match="cannot be decrypted"):
        await run_turn(Agent(name="Bot"), secure.open(session_id), "hi", run_config=RunConfig(model=model))
    assert not model.calls  # the raw item never reached a model
    assert len(await store.open(session_id).get_items()) == 1


def test_store_for_decides_encryption_from_the_settings(tmp_path):
    db = tmp_path / "s.db"
    assert isinstance(store_for(Settings(encryption_key=SECRET), db_path=db), EncryptedStore)
    assert not isinstance(store_for(Settings(), db_path=db), EncryptedStore)
    pooled: Any = store_for(Settings(encryption_key=SECRET), db_path=db, max_open=2)
    assert pooled.pool is not None


async def test_an_encrypted_session_read_without_any_key_is_one_line_not_tokens(store, capsys, tmp_path):
    session_id = "one_feature_user_alice"
    store.opened.add(session_id)
    secure = EncryptedStore(store, SECRET)
    config = RunConfig(model=OfflineModel())
    await run_turn(
        Agent(name="Triage Agent"), secure.open(session_id), "My name is Quinn.", run_config=config
    )
    before = await raw_dump(store)
    keyless = Settings(store_url=url_of(store))

    code, out, err = await acli(capsys, "sessions", "show", session_id, *store_args(store), settings=keyless)
    assert code == 1 and "is encrypted and no SESSION_ENCRYPTION_KEY is set" in one_line(err), out + err
    code, out, err = await acli(
        capsys,
        "chat",
        "--user",
        "alice",
        "--feature",
        "one",
        *store_args(store),
        stdin="hi\n",
        settings=keyless,
    )
    assert code == 1 and "is encrypted" in one_line(err), out + err
    async with serving(db_of(store, tmp_path), store_url=url_of(store)) as client:
        history = await client.get("/api/conversations/one/messages", headers=auth("alice"))
    assert history.status_code == 500 and "SESSION_ENCRYPTION_KEY" in history.json()["detail"]
    assert await raw_dump(store) == before
