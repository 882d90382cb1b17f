"""Turns that cannot corrupt a session: load, a burst on one session, faults, crashes, processes, bad input.

The scenarios live in stress.py; these tests run them at CI size and `python stress.py` at full size.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from agents import Agent, RunConfig

from agent import open_session, run_turn
from conftest import ROOT, subprocess_env
from multisessions import OfflineModel, read_all
from tools import stress


async def test_100_concurrent_users_recall_their_own_fact_with_no_leak_and_no_error(db):
    figures = await stress.many_users(db, users=100, turns=5)
    assert figures == figures | {"errors": 0, "wrong_recalls": 0, "leaks": 0, "items_lost": 0}
    assert figures["model_calls"] == 500


async def test_50_concurrent_turns_on_one_session_end_well_formed(db):
    figures = await stress.shared_burst(db, turns=50)
    assert figures == {
        "turns": 50,
        "items": 100,
        "pairs_whole": 1,
        "messages_lost": 0,
        "messages_duplicated": 0,
    }


async def test_every_injected_fault_leaves_its_session_unchanged(db):
    # The model failing on each of turns 1-5, a raising tool, a timeout mid-call, a guardrail.
    assert await stress.faults(db, model_failures=5) == {"faults_injected": 8, "sessions_changed": 0}


def test_sigkill_at_random_points_never_loses_or_halves_a_turn(db):
    figures = stress.crash_kills(db, kills=20, seed=11)
    assert figures["turns_completed"] >= 20
    assert figures == figures | {"turns_lost": 0, "half_turns": 0, "integrity_failures": 0}


def test_several_processes_on_one_file_lose_nothing_and_never_show_locked(db):
    figures = stress.many_processes(db, processes=4, users=40, turns=5)
    assert figures == figures | {"errors": 0, "locked_errors_seen_by_users": 0, "items_lost": 0}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return stress.baseline_db(tmp_path_factory.mktemp("baseline") / "base.db")


@pytest.mark.parametrize("case", stress.BAD_INPUTS, ids=lambda c: c.label)
def test_bad_cli_input_is_one_line_non_zero_and_leaves_sessions_untouched(case, tmp_path, baseline):
    ok, detail = stress.try_bad_input(case, tmp_path, baseline)
    assert ok, detail


@pytest.mark.parametrize(
    "message, error",
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        ("x" * 1_048_576, "1,048,576 characters"),
        (b"\xff\xfebinary", "bytes"),
        ("broken \ud800 surrogate", "surrogate"),
        (None, "must be text"),
    ],
    ids=["empty", "blank", "1MB", "bytes", "lone-surrogate", "none"],
)
async def test_bad_messages_raise_value_error_and_touch_nothing(message, error, db):
    session = open_session("user_x", db)
    await run_turn(Agent(name="Bot"), session, "My name is Xi.", run_config=RunConfig(model=OfflineModel()))
    before = await read_all(session)
    with pytest.raises(ValueError, match=error):
        await run_turn(Agent(name="Bot"), session, message, run_config=RunConfig(model=OfflineModel()))
    assert await read_all(session) == before


@pytest.mark.parametrize(
    "text",
    ["emoji 🙂👩‍👩‍👧", "right-to-left עברית", "nul \x00 inside", "e\u0301 combining", "'; DROP TABLE x;--"],
)
async def test_odd_unicode_is_stored_and_read_back_exactly(text, db):
    session = open_session("user_odd", db)
    await run_turn(Agent(name="Bot"), session, text, run_config=RunConfig(model=OfflineModel()))
    assert (await read_all(session))[0]["content"] == text


def test_a_1mb_chat_line_is_one_error_and_the_chat_goes_on(db):
    stdin = "x" * 1_048_576 + "\nMy name is Ann.\n/history\n"
    result = subprocess.run(
        [sys.executable, str(ROOT / "agent.py"), "chat", "--user", "ann", "--db", str(db)],
        input=stdin,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    assert "error: message is 1,048,576 characters long (limit 100,000)" in result.stdout
    assert "[user_ann] 2 items" in result.stdout
