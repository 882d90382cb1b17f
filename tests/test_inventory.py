"""The session inventory: list, show, delete (one, a user's), expire; through the CLI and directly."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from agents import Agent, RunConfig
from agents.testing import ScriptedModel

from agent import open_session
from conftest import LESSON, Cli, hermetic
from helpers import reply
from multisessions import (
    Settings,
    SQLiteStore,
    delete_user_sessions,
    expire_sessions,
    list_sessions,
    run_turn,
)
from multisessions.cli import main


def table_counts(db) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0]
            for n in names
            if n != "sqlite_sequence"
        }


def listed_ids(stdout: str) -> list[str]:
    """The session ids of a ``sessions list`` listing (between its header and its total)."""
    return [line.split()[0] for line in stdout.splitlines()[1:-1]]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    """The file ``python agent.py --db FILE`` leaves: every demo's sessions. Tests copy it to change it."""
    folder = tmp_path_factory.mktemp("inv")
    with hermetic(folder):
        assert main(["--db", str(folder / "demos.db")], LESSON, settings=Settings()) == 0
    return folder / "demos.db"


@pytest.fixture
def demo_copy(tmp_path, demo_db):
    db = tmp_path / "copy.db"
    db.write_bytes(demo_db.read_bytes())
    return db


def test_demos_then_list_shows_every_demo_session(cli: Cli, demo_db):
    result = cli("sessions", "list", "--tenant", "demo", "--db", str(demo_db))
    assert result.code == 0, result.err
    ids = listed_ids(result.out)
    assert set(ids) >= {
        "demo:user_alice",
        "demo:user_bob",
        "demo:support_feature_user_alice",
        "demo:thread_support-7731",
        "demo:user_123_20241215",
        "demo:chat_feature_user_123",
    }
    assert len(ids) == table_counts(demo_db)["agent_sessions"]
    assert result.out.splitlines()[-1] == f"{len(ids)} session(s) in SQLite file {demo_db}, tenant 'demo'"


def test_list_filters_by_user(cli: Cli, demo_db):
    result = cli("sessions", "list", "--tenant", "demo", "--user", "alice", "--db", str(demo_db))
    assert set(listed_ids(result.out)) == {
        "demo:user_alice",
        "demo:support_feature_user_alice",
        "demo:sales_feature_user_alice",
        "demo:chat_feature_user_alice",
    }


def test_show_prints_the_history_with_the_handoff_in_one_line(cli: Cli, demo_db):
    result = cli("sessions", "show", "demo:thread_support-7731", "--db", str(demo_db))
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == "demo:thread_support-7731: 10 items, last agent Billing Agent"
    assert "  handoff: transfer_to_billing_agent" in lines
    assert any(line.startswith("  assistant (Billing Agent): ") for line in lines)


def test_show_of_a_missing_id_is_one_line_and_non_zero(cli: Cli, demo_db):
    result = cli("sessions", "show", "user_nobody", "--db", str(demo_db))
    assert result.code == 1
    assert len(result.err_lines) == 1 and "no session 'user_nobody'" in result.err


def test_missing_database_is_one_line_and_not_created(cli: Cli, tmp_path):
    result = cli("sessions", "list", "--db", str(tmp_path / "none.db"))
    assert result.code == 1 and "no database at" in result.err
    assert not (tmp_path / "none.db").exists()


def test_delete_removes_one_session_and_its_rows_and_says_so(cli: Cli, demo_copy):
    before = table_counts(demo_copy)
    result = cli("sessions", "delete", "demo:thread_support-7731", "--db", str(demo_copy))
    assert result.code == 0
    assert result.out.splitlines()[0] == "removing demo:thread_support-7731 (10 items)"
    listed = listed_ids(cli("sessions", "list", "--all-tenants", "--db", str(demo_copy)).out)
    assert "demo:thread_support-7731" not in listed
    after = table_counts(demo_copy)
    assert after["agent_messages"] == before["agent_messages"] - 10
    assert after["agent_sessions"] == before["agent_sessions"] - 1
    assert after["agent_session_last_agent"] == before["agent_session_last_agent"] - 1


def test_delete_dry_run_removes_nothing(cli: Cli, demo_copy, demo_db):
    demo_alice = ["--tenant", "demo", "--user", "alice"]
    result = cli("sessions", "delete", *demo_alice, "--dry-run", "--db", str(demo_copy))
    assert result.code == 0
    assert "would remove 4 session(s)" in result.out
    assert demo_copy.read_bytes() == demo_db.read_bytes()


async def test_delete_all_of_a_users_sessions_leaves_no_orphan_rows(db):
    model = RunConfig(model=_replies(6))
    for session_id in ("user_u1", "chat_feature_user_u1", "user_u1_20240101", "user_u2"):
        session = open_session(session_id, db)
        await run_turn(Agent(name="Bot"), session, "hello", run_config=model)
        await SQLiteStore(db).save_last_agent(session_id, "Bot")
    store = SQLiteStore(db)

    removed = await delete_user_sessions(store, "u1")
    assert {r.session_id for r in removed} == {"user_u1", "chat_feature_user_u1", "user_u1_20240101"}
    assert [r.session_id for r in await list_sessions(store)] == ["user_u2"]
    with sqlite3.connect(db) as conn:
        for table in ("agent_messages", "agent_sessions", "agent_session_last_agent"):
            assert conn.execute(f"SELECT DISTINCT session_id FROM {table}").fetchall() == [("user_u2",)]


async def test_expire_removes_only_sessions_idle_longer_than_n_days(db):
    config = RunConfig(model=_replies(3))
    for session_id in ("user_old", "user_mid", "user_new"):
        await run_turn(Agent(name="Bot"), open_session(session_id, db), "hi", run_config=config)
    now = datetime(2026, 1, 31, 12, tzinfo=UTC)
    with sqlite3.connect(db) as conn:  # a controlled clock: set each session's last activity
        for session_id, age in (("user_old", 40), ("user_mid", 10), ("user_new", 0)):
            when = (now - timedelta(days=age)).strftime("%Y-%m-%d %H:%M:%S")
            conn.execute("UPDATE agent_sessions SET updated_at = ? WHERE session_id = ?", (when, session_id))
    store = SQLiteStore(db)
    assert [r.session_id for r in await expire_sessions(store, 30, now=now)] == ["user_old"]
    assert [r.session_id for r in await expire_sessions(store, 5, now=now, dry_run=True)] == ["user_mid"]
    assert {r.session_id for r in await list_sessions(store)} == {"user_mid", "user_new"}
    assert [r.session_id for r in await list_sessions(store)] == ["user_new", "user_mid"]  # by last activity


def _replies(n):
    return ScriptedModel([reply(f"r{i}") for i in range(n)])


EVIL = "x'; DROP TABLE agent_sessions; --%_\""
"""A session id full of SQL: quotes, a statement separator, a comment, LIKE wildcards."""


def rows_by_table(db, *, without: str) -> dict[str, list[tuple]]:
    """Every row of every table except the rows of session ``without``, and the schema itself."""
    with sqlite3.connect(db) as conn:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        dump = {
            "sqlite_master": conn.execute(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
        }
        for table in tables:
            if table == "sqlite_sequence":
                continue
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            if "session_id" not in columns:  # a user's memory, the side effects: nothing of one session
                dump[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                continue
            dump[table] = conn.execute(
                f"SELECT * FROM {table} WHERE session_id != ? ORDER BY 1", (without,)
            ).fetchall()
    return dump


async def _two_sessions(db) -> None:
    model = ScriptedModel([reply("noted"), reply("noted too")])
    for session_id in (EVIL, "user_bystander"):
        await run_turn(
            Agent(name="Bot"), open_session(session_id, db), "hello", run_config=RunConfig(model=model)
        )
        await SQLiteStore(db).save_last_agent(session_id, "Bot")


def test_sql_metacharacters_in_an_id_are_just_characters(cli: Cli, db):
    asyncio.run(_two_sessions(db))
    others = rows_by_table(db, without=EVIL)

    def listing(*options: str) -> list[str]:
        return cli("sessions", "list", *options, "--db", str(db)).out.splitlines()[1:]  # no header

    assert sorted(row.split(" ")[0] for row in listing()[:-1]) == ["user_bystander", "x';"]
    by_prefix = listing("--prefix", "x'")
    assert by_prefix[0].startswith(EVIL + " ") and by_prefix[-1].startswith("1 session(s)")
    assert listing("--prefix", "%")[-1].startswith("0 session(s)")  # a prefix, not a LIKE pattern
    shown = cli("sessions", "show", EVIL, "--db", str(db))
    assert shown.code == 0 and shown.out.splitlines()[:2] == [
        f"{EVIL}: 2 items, last agent Bot",
        "  user: hello",
    ]
    deleted = cli("sessions", "delete", EVIL, "--db", str(db))
    assert deleted.code == 0 and deleted.out.splitlines()[0] == f"removing {EVIL} (2 items)"

    assert rows_by_table(db, without=EVIL) == others  # the bystander's rows and every table, unchanged
    with sqlite3.connect(db) as conn:
        for table in ("agent_messages", "agent_sessions", "agent_session_last_agent"):
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE session_id = ?", (EVIL,)).fetchone() == (
                0,
            )


def test_list_pages_with_a_cursor_without_repeating_or_skipping(cli: Cli, demo_db):
    every = listed_ids(cli("sessions", "list", "--tenant", "demo", "--limit", "0", "--db", str(demo_db)).out)
    seen, cursor = [], None
    while True:
        more = ["--cursor", cursor] if cursor else []
        result = cli("sessions", "list", "--tenant", "demo", "--limit", "2", *more, "--db", str(demo_db))
        assert result.code == 0, result.err
        page = [line.split()[0] for line in result.out.splitlines() if line.startswith("demo:")]
        assert len(page) <= 2
        seen += page
        hint = [line for line in result.out.splitlines() if "the next page: --cursor " in line]
        if not hint:
            break
        cursor = hint[0].rsplit(" ", 1)[1]
    assert seen == every and len(every) > 2
    bad = cli("sessions", "list", "--cursor", "nonsense", "--db", str(demo_db))
    assert bad.code == 2 and "--cursor" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_backfill_indexes_sessions_written_before_the_index(cli: Cli, demo_db):
    import asyncio
    import sqlite3

    from multisessions import SQLiteStore, list_conversations

    with sqlite3.connect(demo_db) as conn:  # as a file written before the index existed
        conn.execute("DROP TABLE IF EXISTS multisessions_conversations")
    result = cli("sessions", "backfill", "--db", str(demo_db))
    assert result.code == 0 and " added to the conversation index" in result.out, result.err
    page = asyncio.run(list_conversations(SQLiteStore(demo_db), "alice", tenant="demo"))
    assert {c.session_id for c in page.conversations} >= {
        "demo:user_alice",
        "demo:support_feature_user_alice",
    }
    assert all(c.title for c in page.conversations if c.items)
    again = cli("sessions", "backfill", "--db", str(demo_db))
    assert again.out.startswith("0 session(s) added")
