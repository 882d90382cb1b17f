"""Property-based hostile input (hypothesis, bounded): any command line and any message text end
in success or one error line with the documented exit code, and leave every other session
byte-for-byte as it was."""

from __future__ import annotations

import asyncio
import io
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from agents import Agent, RunConfig
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent
from multisessions import OfflineModel, Settings, SQLiteStore, TurnFailed, read_all, run_turn
from multisessions.cli import Lesson, main

LESSON = Lesson(agent.DEMOS, agent.EXTRA_DEMOS, agents=agent.support_agents, first_agent="Triage Agent")
FAST = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))

HOSTILE = st.sampled_from(
    [
        "alice",
        "alice ",
        "acme:alice",
        "Alice",
        "alice@x",
        "demo",
        "",
        " ",
        "\x00",
        "a\tb",
        "\u202e",
        "e\u0301",
        "x'; DROP TABLE agent_sessions;--",
        "--db",
        "-1",
        "nan",
        "1e400",
        "demo:user_alice",
        "user_alice",
        "x" * 5000,
        "%00",
        "../../etc/passwd",
    ]
)
TOKEN = st.one_of(HOSTILE, st.text(max_size=12))
OPTION = st.sampled_from(
    ["--user", "--tenant", "--prefix", "--feature", "--thread", "--date", "--older-than"]
)
COMMAND = st.sampled_from(
    [
        ["sessions", "list"],
        ["sessions", "list", "--all-tenants"],
        ["sessions", "show"],
        ["sessions", "delete", "--dry-run"],
        ["sessions", "expire", "--dry-run"],
        ["chat"],
        ["sessions"],
    ]
)
ARGV = st.tuples(COMMAND, st.lists(st.one_of(OPTION, TOKEN), max_size=5)).map(lambda t: [*t[0], *t[1]])


def rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT * FROM agent_messages ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("fuzz") / "demo.db"
    assert main(["naming", "--db", str(db)], LESSON, Settings()) == 0
    return db


@FAST
@given(argv=ARGV)
def test_any_command_line_is_success_or_one_error_line_and_changes_nothing(argv, demo_db, tmp_path_factory):
    db = tmp_path_factory.mktemp("case") / "s.db"
    shutil.copy(demo_db, db)
    before = rows(db)
    out, err = io.StringIO(), io.StringIO()
    real = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(""), out, err  # chat reads nothing: a quiet session
    try:
        code = main([*argv, "--db", str(db)], LESSON, Settings())
    finally:
        sys.stdin, sys.stdout, sys.stderr = real
    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    if code:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err.getvalue())
    assert rows(db) == before, argv


MESSAGE = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=50),
    st.sampled_from(
        ["", " ", "\x00", "\ud800", "x" * 100_001, "My name is \u202eevil.", "'; DROP TABLE x;--"]
    ),
)


@FAST
@given(message=MESSAGE)
def test_any_message_is_one_turn_or_one_value_error_and_no_other_session_moves(message, tmp_path_factory):
    db = tmp_path_factory.mktemp("msg") / "m.db"

    async def run() -> None:
        store = SQLiteStore(db)
        bot, config = Agent(name="Bot"), RunConfig(model=OfflineModel())
        await run_turn(bot, store.open("user_other"), "My name is Olga.", run_config=config)
        other = await read_all(store.open("user_other"))
        mine = store.open("user_fuzz")
        try:
            await run_turn(bot, mine, message, run_config=config)
        except ValueError:
            assert await read_all(mine) == []
        except TurnFailed as exc:  # pragma: no cover - the offline model does not fail
            pytest.fail(f"turn failed: {exc}")
        else:
            items = await read_all(mine)
            assert len(items) == 2 and items[0]["content"] == message
        assert await read_all(store.open("user_other")) == other

    asyncio.run(run())
