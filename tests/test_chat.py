"""`python agent.py chat`, in process: standard input is the user typing, the store is the truth."""

from __future__ import annotations

import sqlite3

from conftest import Cli
from multisessions import format_listing


def answers(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "Agent: " in line]


def stored_user_messages(db, session_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT json_extract(message_data, '$.content') FROM agent_messages"
            " WHERE session_id = ? AND json_extract(message_data, '$.role') = 'user' ORDER BY id",
            (session_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_switching_users_switches_sessions(cli: Cli, db):
    result = cli(
        "chat",
        "--user",
        "alice",
        "--db",
        str(db),
        stdin="My name is Alice.\n/user bob\nWhat's my name?\n/user alice\nWhat's my name?\n/quit\n",
    )
    assert result.code == 0, result.err
    said = answers(result.out)
    assert said[1] == "[user_bob] Triage Agent: I don't know your name: nothing in this conversation says it."
    assert said[2] == "[user_alice] Triage Agent: Your name is Alice."
    assert stored_user_messages(db, "user_alice") == ["My name is Alice.", "What's my name?"]
    assert stored_user_messages(db, "user_bob") == ["What's my name?"]


def test_the_session_continues_across_runs_and_history_shows_it(cli: Cli, db):
    args = ("chat", "--user", "kim", "--feature", "chat", "--db", str(db))
    assert cli(*args, stdin="My email is kim@example.com\n").code == 0
    result = cli(*args, stdin="What's my email?\n/history\n")
    assert answers(result.out) == ["[chat_feature_user_kim] Triage Agent: Your email is kim@example.com."]
    assert "[chat_feature_user_kim] 4 items" in result.out
    assert "  user: My email is kim@example.com" in result.out


def test_the_specialist_keeps_the_conversation_across_runs(cli: Cli, db):
    args = ("chat", "--user", "dee", "--thread", "t-1", "--db", str(db))
    cli(*args, stdin="I was charged twice, I need a refund\n")
    result = cli(*args, stdin="What was my problem?\n")
    assert answers(result.out)[0].startswith("[thread_t-1] Billing Agent: The problem you reported is")
    with sqlite3.connect(db) as conn:
        last = conn.execute("SELECT agent_name FROM agent_session_last_agent").fetchall()
    assert last == [("Billing Agent",)]


def test_sessions_command_lists_the_inventory_and_end_of_input_exits_cleanly(cli: Cli, db):
    stdin = "hello\n/sessions\n/nonsense\n"  # no /quit: the input just ends
    result = cli("chat", "--user", "zoe", "--date", "20241215", "--db", str(db), stdin=stdin)
    assert result.code == 0 and result.err == ""
    lines = result.out.splitlines()
    header = lines.index("  " + format_listing([])[0])  # the inventory's header, indented
    assert lines[header + 1].split()[:3] == ["user_zoe_20241215", "dated", "2"]  # id, kind, items
    assert lines[-1] == "unknown command; try /user NAME, /history, /sessions or /quit"


def test_a_bad_user_name_is_one_line(cli: Cli, db):
    result = cli("chat", "--user", " ", "--db", str(db))
    assert result.code == 1
    assert result.err.strip() == "error: user_id is empty or whitespace only"
    result = cli("chat", "--user", "ok", "--db", str(db), stdin="/user \x01x\n/quit\n")
    assert result.code == 0 and "control characters" in result.out


def test_a_1mb_chat_line_is_one_error_and_the_chat_goes_on(cli: Cli, db):
    result = cli(
        "chat", "--user", "ann", "--db", str(db), stdin="x" * 1_048_576 + "\nMy name is Ann.\n/history\n"
    )
    assert result.code == 0
    assert "error: message is 1,048,576 characters long (limit 100,000)" in result.out
    assert "[user_ann] 2 items" in result.out
    assert stored_user_messages(db, "user_ann") == ["My name is Ann."]
