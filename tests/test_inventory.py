"""The session inventory: list, show, delete (one, a user's), expire; through the CLI and directly."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from agents import Agent, RunConfig
from test_cli import run_cli

from agent import open_session, run_turn
from helpers import reply
from multisessions import SQLiteStore, delete_user_sessions, expire_sessions, list_sessions


def table_counts(db) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0]
            for n in names
            if n != "sqlite_sequence"
        }


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("inv") / "demos.db"
    result = run_cli("--db", str(db))
    assert result.returncode == 0, result.stderr
    return db


def test_demos_then_list_shows_every_demo_session(demo_db):
    result = run_cli("sessions", "list", "--tenant", "demo", "--db", str(demo_db))
    assert result.returncode == 0, result.stderr
    ids = [line.split()[0] for line in result.stdout.splitlines()[1:-1]]
    assert set(ids) >= {
        "demo:user_alice",
        "demo:user_bob",
        "demo:support_feature_user_alice",
        "demo:thread_support-7731",
        "demo:user_123_20241215",
        "demo:chat_feature_user_123",
    }
    assert result.stdout.splitlines()[-1] == f"{len(ids)} session(s) in SQLite file {demo_db}, tenant 'demo'"


def test_list_filters_by_user(demo_db):
    result = run_cli("sessions", "list", "--tenant", "demo", "--user", "alice", "--db", str(demo_db))
    ids = {line.split()[0] for line in result.stdout.splitlines()[1:-1]}
    assert ids == {
        "demo:user_alice",
        "demo:support_feature_user_alice",
        "demo:sales_feature_user_alice",
        "demo:chat_feature_user_alice",
    }


def test_show_prints_the_history_with_the_handoff_in_one_line(demo_db):
    result = run_cli("sessions", "show", "demo:thread_support-7731", "--db", str(demo_db))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "demo:thread_support-7731: 10 items, last agent Billing Agent"
    assert "  handoff: transfer_to_billing_agent" in lines
    assert any(line.startswith("  assistant (Billing Agent): ") for line in lines)


def test_show_of_a_missing_id_is_one_line_and_non_zero(demo_db):
    result = run_cli("sessions", "show", "user_nobody", "--db", str(demo_db))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no session 'user_nobody'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_database_is_one_line_and_not_created(tmp_path):
    result = run_cli("sessions", "list", "--db", str(tmp_path / "none.db"))
    assert result.returncode == 1 and "no database at" in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_delete_removes_one_session_and_its_rows_and_says_so(tmp_path, demo_db):
    db = tmp_path / "copy.db"
    db.write_bytes(demo_db.read_bytes())
    before = table_counts(db)
    result = run_cli("sessions", "delete", "demo:thread_support-7731", "--db", str(db))
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "removing demo:thread_support-7731 (10 items)"
    listed = run_cli("sessions", "list", "--all-tenants", "--db", str(db)).stdout
    assert "thread_support-7731" not in listed
    after = table_counts(db)
    assert after["agent_messages"] == before["agent_messages"] - 10
    assert after["agent_sessions"] == before["agent_sessions"] - 1
    assert after["agent_session_last_agent"] == before["agent_session_last_agent"] - 1


def test_delete_dry_run_removes_nothing(tmp_path, demo_db):
    db = tmp_path / "copy.db"
    db.write_bytes(demo_db.read_bytes())
    demo_alice = ["--tenant", "demo", "--user", "alice"]
    result = run_cli("sessions", "delete", *demo_alice, "--dry-run", "--db", str(db))
    assert "would remove 4 session(s)" in result.stdout
    assert table_counts(db) == table_counts(demo_db)


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
    from agents.testing import ScriptedModel

    return ScriptedModel([reply(f"r{i}") for i in range(n)])


def test_sql_metacharacters_in_an_id_are_just_characters(tmp_path):
    db = tmp_path / "s.db"
    run_cli("naming", "--db", str(db))
    evil = "x'; DROP TABLE agent_sessions; --"
    result = run_cli("sessions", "show", evil, "--db", str(db))
    assert result.returncode == 1 and "no session" in result.stderr
    assert "agent_sessions" in table_counts(db)
