"""`python agent.py chat`, driven through a subprocess fed on standard input."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, subprocess_env


def chat(stdin: str, *args: str, db) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), "chat", *args, "--db", str(db)],
        input=stdin,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def answers(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if "Agent: " in line]


def test_switching_users_switches_sessions(db):
    result = chat(
        "My name is Alice.\n/user bob\nWhat's my name?\n/user alice\nWhat's my name?\n/quit\n",
        "--user",
        "alice",
        db=db,
    )
    assert result.returncode == 0, result.stderr
    said = answers(result.stdout)
    assert said[1] == "[user_bob] Triage Agent: I don't know your name: nothing in this conversation says it."
    assert said[2] == "[user_alice] Triage Agent: Your name is Alice."


def test_the_session_continues_across_runs_and_history_shows_it(db):
    chat("My email is kim@example.com\n", "--user", "kim", "--feature", "chat", db=db)
    result = chat("What's my email?\n/history\n", "--user", "kim", "--feature", "chat", db=db)
    assert answers(result.stdout) == ["[chat_feature_user_kim] Triage Agent: Your email is kim@example.com."]
    assert "[chat_feature_user_kim] 4 items" in result.stdout
    assert "  user: My email is kim@example.com" in result.stdout


def test_the_specialist_keeps_the_conversation_across_runs(db):
    chat("I was charged twice, I need a refund\n", "--user", "dee", "--thread", "t-1", db=db)
    result = chat("What was my problem?\n", "--user", "dee", "--thread", "t-1", db=db)
    assert answers(result.stdout)[0].startswith("[thread_t-1] Billing Agent: The problem you reported is")


def test_sessions_command_and_end_of_input_exit_cleanly(db):
    result = chat("hello\n/sessions\n/nonsense\n", "--user", "zoe", "--date", "20241215", db=db)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "user_zoe_20241215" in result.stdout
    assert "unknown command" in result.stdout


def test_a_bad_user_name_is_one_line(db):
    result = chat("", "--user", " ", db=db)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: user_id is empty or whitespace only"
    result = chat("/user \x01x\n/quit\n", "--user", "ok", db=db)
    assert result.returncode == 0 and "control characters" in result.stdout
