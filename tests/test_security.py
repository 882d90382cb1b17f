"""Issue 10, row by row: hostile input never reaches another tenant, prints a secret, loses data
or ends in a traceback, on every store. The CLI runs in process (``main``), in a worker thread
when the test itself runs in an event loop."""

from __future__ import annotations

import asyncio
import errno
import io
import sqlite3
import subprocess
import sys
import uuid
from typing import Any

import pytest
import redis
from agents import Agent, RunConfig

import agent
from multisessions import (
    ConfigError,
    OfflineModel,
    Settings,
    StoreError,
    check_session_id,
    delete_user_sessions,
    expire_sessions,
    feature_session_id,
    list_sessions,
    load_settings,
    read_all,
    run_turn,
    user_session_id,
)
from multisessions.cli import Lesson, main
from multisessions.naming import MAX_ID_LENGTH, MAX_PART_LENGTH
from multisessions.stores import EncryptedStore, RedisStore, SQLiteStore, open_store, tenant_key
from multisessions.stores.redis_store import MAX_TTL
from stores_fixture import REDIS_URL, postgres_url

LESSON = Lesson(agent.DEMOS, agent.EXTRA_DEMOS, agents=agent.support_agents, first_agent="Triage Agent")
SECRET = "k" * 16 + "-test-secret-" + "z" * 16  # 45 characters: a test key, not a real one


def cli(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = "", settings: Settings | None = None):
    """``python agent.py ARGV`` in process; returns (exit code, stdout, stderr)."""
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv), LESSON, settings or Settings())
    finally:
        sys.stdin = old_stdin
    out, err = capsys.readouterr()
    return code, out, err


async def acli(capsys, *argv: str, stdin: str = "", settings: Settings | None = None):
    """``cli`` from inside a running event loop (``main`` runs its own, in a thread)."""
    return await asyncio.to_thread(cli, capsys, *argv, stdin=stdin, settings=settings)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def store_args(store) -> list[str]:
    """The command-line options that name the fixture's store."""
    if store.kind in ("sqlite", "pooled"):
        return ["--db", str(store.db_path)]
    if store.kind == "redis":
        return ["--store", f"{REDIS_URL}?key_prefix={store.key_prefix}"]
    return ["--store", postgres_url()]


async def put(store, session_id: str, text: str = "hello") -> None:
    """A session holding one user message, straight through the SDK session."""
    await store.open(session_id).add_items([{"role": "user", "content": f"{text} ({session_id})"}])


async def snapshot(store, ids) -> dict[str, Any]:
    return {i: await read_all(store.open(i)) for i in ids}


# --- Row 1: --user alice reaches only alice's sessions, in one tenant -----------------------


def tenant_world(tag: str) -> tuple[dict[str, str], str]:
    """Sessions of user ``alice-TAG`` in three tenants, and look-alike users beside them."""
    alice = f"alice-{tag}"
    acme, globex = f"acme-{tag}", f"globex-{tag}"
    ids = {
        "mine": user_session_id(alice),
        "mine_feature": feature_session_id("chat", alice),
        "acme": user_session_id(alice, tenant=acme),
        "acme_feature": feature_session_id("chat", alice, tenant=acme),
        "globex": user_session_id(alice, tenant=globex),
        "user_named_acme:alice": user_session_id(f"{acme}:{alice}"),
        "capital": user_session_id(f"Alice-{tag}"),
        "email": user_session_id(f"{alice}@x"),
        "demo": user_session_id(alice, tenant="demo"),
    }
    return ids, alice


async def test_deleting_a_users_sessions_never_reaches_another_tenant_or_a_look_alike(store, capsys):
    tag = uuid.uuid4().hex[:8]
    ids, alice = tenant_world(tag)
    for session_id in ids.values():
        await put(store, session_id)
    before = await snapshot(store, ids.values())

    code, out, err = await acli(capsys, "sessions", "delete", "--user", alice, *store_args(store))
    assert code == 0, err
    assert {line.split()[1] for line in out.splitlines() if line.startswith("removing ")} == {
        ids["mine"],
        ids["mine_feature"],
    }
    after = await snapshot(store, ids.values())
    assert after[ids["mine"]] == [] and after[ids["mine_feature"]] == []
    for label, session_id in ids.items():
        if label not in ("mine", "mine_feature"):
            assert after[session_id] == before[session_id], label

    removed = await delete_user_sessions(store, alice, tenant=f"acme-{tag}")
    assert {r.session_id for r in removed} == {ids["acme"], ids["acme_feature"]}
    assert await read_all(store.open(ids["globex"])) == before[ids["globex"]]
    assert await read_all(store.open(ids["user_named_acme:alice"])) == before[ids["user_named_acme:alice"]]


async def test_listing_is_scoped_to_one_tenant_and_rejects_ambiguous_names(store):
    tag = uuid.uuid4().hex[:8]
    ids, alice = tenant_world(tag)
    for session_id in ids.values():
        await put(store, session_id)
    no_tenant = {r.session_id for r in await list_sessions(store, user=alice)}
    assert no_tenant == {ids["mine"], ids["mine_feature"]}
    acme = {
        r.session_id for r in await list_sessions(store, tenant=f"acme-{tag}", prefix=f"acme-{tag}:user_")
    }
    assert acme == {ids["acme"]}
    everywhere = {r.session_id for r in await list_sessions(store, all_tenants=True)}
    assert set(ids.values()) <= everywhere
    for bad in (f"{alice} ", f" {alice}", "", "a\x00b"):
        with pytest.raises(ValueError):
            await list_sessions(store, user=bad)
    stale = await expire_sessions(store, 0, tenant=f"globex-{tag}", dry_run=True)
    assert {r.session_id for r in stale} <= {ids["globex"]}


# --- The demos live in tenant "demo": they never clear a user's own chat -------------------


def test_the_demos_never_touch_a_users_own_chat(db, capsys):
    code, out, err = cli(capsys, "chat", "--user", "alice", "--db", str(db), stdin="My name is Alice.\n")
    assert code == 0, err
    mine = sqlite3.connect(db).execute(
        "SELECT message_data FROM agent_messages WHERE session_id='user_alice'"
    )
    before = mine.fetchall()
    code, out, err = cli(capsys, "multi-user", "--db", str(db))
    assert code == 0, err
    assert "[demo:user_alice] alice:" in out
    after = sqlite3.connect(db).execute(
        "SELECT message_data FROM agent_messages WHERE session_id='user_alice'"
    )
    assert after.fetchall() == before and len(before) == 2


def test_chat_in_a_tenant_stays_in_it(db, capsys):
    code, out, err = cli(
        capsys, "chat", "--user", "alice", "--tenant", "acme", "--db", str(db), stdin="Hi.\n"
    )
    assert code == 0 and "[acme:user_alice] Triage Agent:" in out, err
    code, out, err = cli(capsys, "sessions", "list", "--db", str(db))
    assert "0 session(s)" in out
    code, out, err = cli(capsys, "sessions", "list", "--tenant", "acme", "--db", str(db))
    assert "acme:user_alice" in out


# --- Row 2: no password is ever printed ---------------------------------------------------

PASSWORDS = [
    "hunter2#x",
    "pa/ss-word",
    "p@ss@word",
    "q?uery=1&x",
    "sl/ash#hash@at?q",
    "per%2Fcent%40pw",
    "a b+c",
]


def with_password(scheme: str, host: str, password: str) -> str:
    return f"{scheme}://user:{password}@{host}"


def secrets_of(password: str) -> list[str]:
    from urllib.parse import unquote

    return [
        p for p in {password, unquote(password)} | set(password.replace("%2F", "/").split("/")) if len(p) > 3
    ]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "scheme, host",
    [("postgresql", "127.0.0.1:5439/test"), ("redis", "127.0.0.1:6390/0"), ("mysql", "127.0.0.1/db")],
)
def test_an_unreachable_store_never_prints_its_password(scheme, host, password, capsys):
    url = with_password(scheme, host, password)
    for argv in (["sessions", "list", "--store", url], ["naming", "--store", url]):
        code, out, err = cli(capsys, *argv)
        line = one_error_line(err)
        assert code in (1, 2)
        for secret in secrets_of(password):
            assert secret not in out + err, (secret, line)


@pytest.mark.parametrize("password", ["hunter2pw", "pa/sswd99"])
def test_a_reachable_redis_refusing_the_password_does_not_echo_it(password, capsys):
    url = f"redis://:{password}@127.0.0.1:6379/15"
    code, out, err = cli(capsys, "sessions", "list", "--store", url)
    if code:  # refused by the server or by redis-py: one line either way
        one_error_line(err)
    assert "sswd99" not in out + err and "hunter2pw" not in out + err


def test_a_password_in_the_query_string_is_never_printed(capsys):
    code, out, err = cli(capsys, "sessions", "list", "--store", "redis://127.0.0.1:6390/0?password=s3cr3t-pw")
    assert code == 1 and "s3cr3t" not in one_error_line(err)
    code, out, err = cli(
        capsys, "sessions", "list", "--store", "postgresql://u@127.0.0.1:5439/t?password=s3cr3t-pw"
    )
    assert code == 1 and "s3cr3t" not in one_error_line(err)


@pytest.mark.parametrize("module", ["redis.asyncio", "sqlalchemy.ext.asyncio"])
def test_a_missing_driver_never_prints_the_password(module, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # import fails, as without the driver
    scheme = "redis" if module.startswith("redis") else "postgresql"
    code, out, err = cli(capsys, "sessions", "list", "--store", f"{scheme}://u:hunter2#x@127.0.0.1:1/0")
    line = one_error_line(err)
    assert code == 1 and "hunter2" not in line and "requirements-stores.txt" in line


def test_driver_errors_quoting_the_url_are_scrubbed(monkeypatch, capsys):
    import redis.asyncio

    url = "redis://:hunter2%2Fpw@127.0.0.1:6379/15"

    async def fails(self, *args, **kwargs):
        raise redis.ConnectionError(f"Error connecting to {url} (password hunter2/pw)")

    monkeypatch.setattr(redis.asyncio.Redis, "ping", fails)
    code, out, err = cli(capsys, "sessions", "list", "--store", url)
    line = one_error_line(err)
    assert code == 1 and "hunter2" not in line and "unreachable" in line


# --- Row 3: ttl is a positive whole number of seconds --------------------------------------


@pytest.mark.parametrize("ttl", ["0", "-5", "1.5", "abc", "", "+5", " 5", str(MAX_TTL + 1), "9" * 40])
def test_a_bad_ttl_is_one_line_exit_2_and_stores_nothing(ttl, capsys):
    prefix = f"ttl-{uuid.uuid4().hex[:8]}"
    url = f"{REDIS_URL}?key_prefix={prefix}&ttl={ttl}"
    for argv in (["naming", "--store", url], ["chat", "--user", "a", "--store", url]):
        code, out, err = cli(capsys, *argv, stdin="hello\n")
        assert code == 2 and "ttl=" in one_error_line(err)
    with pytest.raises(ConfigError):
        RedisStore(url)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert client.keys(f"{prefix}*") == []  # nothing was stored under the prefix
    finally:
        client.close()


def test_the_longest_ttl_is_accepted():
    assert RedisStore(f"{REDIS_URL}?ttl={MAX_TTL}").ttl == MAX_TTL


# --- Row 5: Redis stopped during chat -----------------------------------------------------


def test_redis_failing_during_chat_is_one_line_and_a_clean_end(monkeypatch, capsys):
    import redis.asyncio

    real = redis.asyncio.Redis.lrange

    async def gone(self, *args, **kwargs):
        if str(args[0]).endswith(":messages"):  # reading the history for /history, outside a turn
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(redis.asyncio.Redis, "lrange", gone)
    prefix = f"chat-{uuid.uuid4().hex[:8]}"
    url = f"{REDIS_URL}?key_prefix={prefix}"
    code, out, err = cli(
        capsys, "chat", "--user", "ann", "--store", url, stdin="My name is Ann.\n/history\nhi\n"
    )
    line = one_error_line(err)
    assert code == 1 and "Connection refused" in line and "chat ended" in line
    monkeypatch.undo()
    cli(capsys, "sessions", "delete", "user_ann", "--store", url)


def test_a_store_failing_inside_a_chat_turn_is_one_line_and_the_chat_goes_on(db, monkeypatch, capsys):
    async def full(self, session_id, owner, items):
        raise sqlite3.OperationalError("database or disk is full")

    # Where a turn on a SQLite file is written (the file's one connection).
    monkeypatch.setattr("multisessions.stores.sqlite_turns.SQLiteTurns.commit", full)
    code, out, err = cli(capsys, "chat", "--user", "ann", "--db", str(db), stdin="hi\n/history\n")
    assert code == 0 and "Traceback" not in out + err
    assert "is full" in out and "[user_ann] 0 items" in out


# --- Row 6: a stored item that is valid JSON but not an object ----------------------------


async def test_an_item_that_is_not_an_object_is_shown_as_unreadable(store, capsys):
    session_id = f"user_json-{uuid.uuid4().hex[:8]}"
    await put(store, session_id)
    raw = ["42", "null", "[]", '"text"']
    if store.kind in ("sqlite", "pooled"):
        with sqlite3.connect(store.db_path) as conn:
            conn.executemany(
                "INSERT INTO agent_messages (session_id, message_data) VALUES (?, ?)",
                [(session_id, r) for r in raw],
            )
    elif store.kind == "redis":
        await store.client.rpush(f"{store.key_prefix}:{session_id}:messages", *raw)
    else:
        from sqlalchemy import text

        async with store.engine.begin() as conn:
            for r in raw:
                await conn.execute(
                    text("INSERT INTO agent_messages (session_id, message_data) VALUES (:i, :d)"),
                    {"i": session_id, "d": r},
                )
    code, out, err = await acli(capsys, "sessions", "show", session_id, *store_args(store))
    assert code == 0 and "Traceback" not in out + err, err
    assert out.count("(unreadable item: ") == 4


# --- Row 7: metadata keys no session id can reach -----------------------------------------


async def test_a_session_named_like_metadata_never_collides(store):
    victim = f"victim-{uuid.uuid4().hex[:8]}"
    await put(store, victim)
    await store.save_last_agent(victim, "Billing Agent")
    await put(store, f"{victim}:last_agent")
    await store.save_last_agent(f"{victim}:last_agent", "Technical Agent")
    listed = {r.session_id: r.items for r in await list_sessions(store, all_tenants=True)}
    assert listed[victim] == 1 and listed[f"{victim}:last_agent"] == 1
    assert await store.load_last_agent(victim) == "Billing Agent"
    result = await run_turn(
        Agent(name="Bot"), store.open(victim), "again", run_config=RunConfig(model=OfflineModel())
    )
    assert result.final_output and len(await read_all(store.open(victim))) == 3


async def test_redis_refuses_ids_that_would_alias_the_sdks_own_keys(store):
    if store.kind != "redis":
        pytest.skip("only Redis keeps several keys per session")
    x = f"x-{uuid.uuid4().hex[:8]}"
    await put(store, x)
    before = await read_all(store.open(x))
    for alias in (f"{x}:messages", f"{x}:counter"):
        with pytest.raises(StoreError, match="another session"):
            store.store.open(alias)  # the fixture's own tracking would try to delete it afterwards
    assert await read_all(store.open(x)) == before


# --- Row 8: every id the helpers build can be shown and deleted ----------------------------


def test_the_id_limit_is_the_longest_id_the_helpers_build():
    widest = "\U0001f600" * MAX_PART_LENGTH  # 4 UTF-8 bytes each: the longest escaping
    longest = feature_session_id(widest, widest, tenant=widest)
    assert len(longest) == MAX_ID_LENGTH == 4623
    assert check_session_id(longest) == longest
    with pytest.raises(ValueError, match="limit"):
        check_session_id(longest + "x")


async def test_the_longest_id_is_listed_shown_and_deleted_on_every_store(store, capsys):
    widest = "\U0001f600" * (MAX_PART_LENGTH - 8)
    tag = uuid.uuid4().hex[:8]
    longest = feature_session_id(widest + tag, widest + tag, tenant=widest + tag)
    await put(store, longest)
    code, out, err = await acli(capsys, "sessions", "show", longest, *store_args(store))
    assert code == 0 and out.startswith(f"{longest}: 1 items"), err
    code, out, err = await acli(capsys, "sessions", "delete", longest, *store_args(store))
    assert code == 0 and f"removing {longest} (1 items)" in out, err
    assert longest not in {r.session_id for r in await list_sessions(store, all_tenants=True)}


# --- Row 9: a full disk or a read-only filesystem is said as such -------------------------


@pytest.mark.parametrize(
    "failure, expect",
    [
        (sqlite3.OperationalError("database or disk is full"), "is full"),
        (OSError(errno.ENOSPC, "No space left on device"), "is full"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "read-only"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
    ],
    ids=["sqlite-full", "enospc", "sqlite-readonly", "erofs"],
)
def test_a_full_or_read_only_disk_is_named_truthfully(failure, expect, db, monkeypatch, capsys):
    cli(capsys, "naming", "--db", str(db))
    before = sqlite3.connect(db).execute("SELECT * FROM agent_messages").fetchall()

    def refuse(self):
        raise failure

    monkeypatch.setattr(SQLiteStore, "_connect", refuse)
    code, out, err = cli(capsys, "naming", "--db", str(db))
    line = one_error_line(err)
    assert code == 1 and expect in line and "move it aside" not in line
    assert sqlite3.connect(db).execute("SELECT * FROM agent_messages").fetchall() == before


def test_listing_a_healthy_file_that_cannot_be_opened_for_writing_works(db, monkeypatch, capsys):
    cli(capsys, "naming", "--db", str(db))
    real = sqlite3.connect

    def no_shared_memory(target, *args, **kwargs):
        # A read-only folder (or full disk): SQLite cannot create the WAL's -shm file.
        if kwargs.get("uri") and "immutable=1" not in str(target):
            raise sqlite3.OperationalError("unable to open database file")
        return real(target, *args, **kwargs)

    monkeypatch.setattr("multisessions.stores.sqlite_store.sqlite3.connect", no_shared_memory)
    code, out, err = cli(capsys, "sessions", "list", "--tenant", "demo", "--db", str(db))
    assert code == 0, err
    assert "4 session(s)" in out


# --- Encryption at rest -------------------------------------------------------------------

CANARY = "Plaintext-Canary-7731"


async def raw_text(store, ids) -> str:
    """What the store itself holds for ``ids``, read around every session class."""
    if store.kind in ("sqlite", "pooled"):
        with sqlite3.connect(store.db_path) as conn:
            return repr(conn.execute("SELECT * FROM agent_messages").fetchall())
    if store.kind == "redis":
        return repr([await store.client.lrange(f"{store.key_prefix}:{i}:messages", 0, -1) for i in ids])
    from sqlalchemy import text

    async with store.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT message_data FROM agent_messages WHERE session_id = ANY(:ids)"), {"ids": list(ids)}
        )
        return repr(rows.all())


async def test_encrypted_sessions_hold_no_plaintext_and_read_back_whole(store, capsys):
    tag = uuid.uuid4().hex[:8]
    ids = [user_session_id(f"enc-{tag}", tenant="acme"), user_session_id(f"enc-{tag}")]
    secure = EncryptedStore(store, SECRET)
    config = RunConfig(model=OfflineModel())
    for session_id in ids:
        await run_turn(Agent(name="Bot"), secure.open(session_id), f"My name is {CANARY}.", run_config=config)
        result = await run_turn(
            Agent(name="Bot"), secure.open(session_id), "What's my name?", run_config=config
        )
        assert CANARY in str(result.final_output)  # the model was sent the decrypted history
    assert CANARY not in await raw_text(store, ids)
    assert {r.session_id: r.items for r in await list_sessions(secure, tenant="acme")} == {ids[0]: 4}
    code, out, err = await acli(
        capsys, "sessions", "show", ids[1], *store_args(store), settings=Settings(encryption_key=SECRET)
    )
    assert code == 0 and CANARY in out, err
    # Without the key (or with another), the store yields nothing readable, never plaintext.
    assert await read_all(EncryptedStore(store, SECRET[::-1]).open(ids[1])) == []


async def test_encrypted_items_are_never_hidden_by_age(db, monkeypatch):
    secure = open_store(None, db_path=db, encryption_key=SECRET)
    session = secure.open("user_old")
    await run_turn(Agent(name="Bot"), session, "My name is Ola.", run_config=RunConfig(model=OfflineModel()))
    import cryptography.fernet as fernet

    later = fernet.time.time() + 10 * 365 * 24 * 3600  # ten years on: the SDK's default hid it at 600 s
    monkeypatch.setattr(fernet.time, "time", lambda: later)
    assert len(await read_all(secure.open("user_old"))) == 2


def test_each_tenant_has_its_own_key_and_a_short_secret_is_refused(db):
    assert len({tenant_key(SECRET, i) for i in ("acme:user_a", "globex:user_a", "user_a", "acme%3A:x")}) == 4
    assert tenant_key(SECRET, "acme:user_a") == tenant_key(SECRET, "acme:thread_b")
    with pytest.raises(ConfigError, match="SESSION_ENCRYPTION_KEY"):
        open_store(None, db_path=db, encryption_key="short")


def test_every_demo_runs_encrypted_and_the_file_holds_no_conversation(db, capsys):
    code, out, err = cli(capsys, "--db", str(db), settings=Settings(encryption_key=SECRET))
    assert code == 0, err
    assert "Your email is alice@example.com" in out  # recalled through decryption
    stored = repr(sqlite3.connect(db).execute("SELECT message_data FROM agent_messages").fetchall())
    # Phrases with spaces or "@": a Fernet token (url-safe base64) can hold "5512" by chance, never these.
    for phrase in (
        "alice@example.com",
        "name is Dana",
        "order 5512",
        "Enterprise plan",
        "transfer_to_billing",
    ):
        assert phrase not in stored
    code, out, err = cli(
        capsys,
        "sessions",
        "show",
        "demo:user_alice",
        "--db",
        str(db),
        settings=Settings(encryption_key=SECRET),
    )
    assert code == 0 and "alice@example.com" in out


# --- Row 4: the cost of one 100,000-character message -------------------------------------


async def test_one_100k_message_barely_holds_up_other_users(tmp_path):
    from tools.stress import big_message

    figures = await big_message(tmp_path / "big.db", others=3, turns=2)
    assert figures["message_chars"] == 100_000
    assert figures["big_turn_loop_ms"] < 1000 and figures["max_loop_stall_ms"] < 1000, figures


def test_the_encryption_key_comes_from_settings_and_is_never_in_their_repr(tmp_path):
    settings = load_settings({"SESSION_ENCRYPTION_KEY": SECRET}, dotenv=tmp_path / "none")
    assert settings.encryption_key == SECRET and SECRET not in repr(settings)


def test_listing_and_showing_an_immutable_healthy_file_works(db, capsys):
    cli(capsys, "naming", "--db", str(db))
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        code, out, err = cli(capsys, "sessions", "list", "--tenant", "demo", "--db", str(db))
        assert code == 0 and "4 session(s)" in out, err
        code, out, err = cli(capsys, "sessions", "show", "demo:user_123", "--db", str(db))
        assert code == 0 and "Sam" in out, err
        code, out, err = cli(capsys, "naming", "--db", str(db))
        assert code == 1 and "read-only" in one_error_line(err) and "move it aside" not in err
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
