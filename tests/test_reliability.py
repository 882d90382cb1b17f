"""Turns that cannot corrupt a session: load, a burst on one session, faults, crashes, processes, bad input.

The scenarios live in tools/stress.py; these tests run them at the smallest size that still shows
the property (crashes and several processes as real processes), `python -m tools.stress` at full size.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import sqlite3

import pytest
from agents import Agent, RunConfig
from agents.testing import ModelStep, ScriptedModel

from agent import open_session
from conftest import Cli
from helpers import reply
from multisessions import OfflineModel, item_summary, read_all, run_turn
from tools import stress

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow


async def test_50_concurrent_users_recall_their_own_fact_with_no_leak_and_no_error(db):
    figures = await stress.many_users(db, users=50, turns=4)
    assert figures == figures | {"errors": 0, "wrong_recalls": 0, "leaks": 0, "items_lost": 0}
    assert figures["model_calls"] == 200


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
    figures = stress.crash_kills(db, kills=6, seed=11)
    assert figures["turns_completed"] >= 6
    assert figures == figures | {"turns_lost": 0, "half_turns": 0, "integrity_failures": 0}


def _second_turn_hangs_in_the_model(db_path: str, write_fd: int) -> None:
    """One whole turn, then a turn whose model call says so on ``write_fd`` and never returns."""

    async def hang(call):
        os.write(write_fd, b"in the model\n")
        await asyncio.sleep(60)

    async def go() -> None:
        config = RunConfig(model=ScriptedModel([reply("first answer"), ModelStep.respond(hang)]))
        session = open_session("thread_killed", db_path)
        await run_turn(Agent(name="Bot"), session, "first", run_config=config)
        await run_turn(Agent(name="Bot"), session, "second", run_config=config)

    asyncio.run(go())


def test_sigkill_while_the_model_is_thinking_leaves_the_session_as_before_the_turn(db):
    # Deterministic, where random kills rarely land inside a turn: this one lands after the turn
    # began and before it could end. Plain Runner.run has saved "second" by then (an orphan).
    read_fd, write_fd = os.pipe()
    child = multiprocessing.get_context("fork").Process(
        target=_second_turn_hangs_in_the_model, args=(str(db), write_fd), daemon=True
    )
    child.start()
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        assert pipe.readline() == b"in the model\n"
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message_data FROM agent_messages ORDER BY id").fetchall()
    assert [item_summary(json.loads(row[0])) for row in rows] == ["user: first", "assistant: first answer"]


def test_several_processes_on_one_file_lose_nothing_and_never_show_locked(db):
    figures = stress.many_processes(db, processes=4, users=40, turns=5)
    assert figures == figures | {"errors": 0, "locked_errors_seen_by_users": 0, "items_lost": 0}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return stress.baseline_db(tmp_path_factory.mktemp("baseline") / "base.db")


@pytest.fixture
def in_process(cli: Cli) -> stress.RunCommand:
    """The command line in this process (tests/test_scripts.py runs a bad input as a real process)."""

    def run(args: list[str], stdin: str, folder) -> stress.Ran:
        result = cli(*args, stdin=stdin)
        return result.code, result.out, result.err

    return run


@pytest.mark.parametrize("case", stress.BAD_INPUTS, ids=lambda c: c.label)
def test_bad_cli_input_is_one_line_non_zero_and_leaves_sessions_untouched(
    case, tmp_path, baseline, in_process
):
    ok, detail = stress.try_bad_input(case, tmp_path, baseline, run=in_process)
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
