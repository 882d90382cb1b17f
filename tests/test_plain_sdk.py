"""docs/plain-sdk.md: demo 1 with the SDK alone runs, as the page shows it, and lacks what the page says.

The page's own command runs in a shell, in a copy of the project, with the stand-in's real port;
then the database is read back and the stand-in's log is searched for another user's fact. The
canaries below show the gaps the page lists, on the SDK's own session: if one fails, the SDK
closed that gap and the page (and the reason for the project's turn) must say so.
(A failed turn's orphan message: tests/test_run_turn.py.)
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agents import Agent, RunConfig, Runner, SQLiteSession, function_tool
from agents.testing import ModelStep, ScriptedModel, function_call

from conftest import ROOT, project_copy, subprocess_env
from docs_pages import DOCS, read_page
from helpers import reply, user_texts
from standin_fixture import model_requests, sent_text
from tools.standin_server import StandinServer

pytestmark = pytest.mark.slow  # starts processes or servers: python -m pytest -m slow

PAGE = read_page(DOCS / "plain-sdk.md")
[COMMAND] = [line for line in PAGE.lines("bash") if "examples/plain_sdk.py" in line]
PAGE_PORT = "127.0.0.1:8089"
EMAILS = {"user_alice": "alice@example.com", "user_bob": "bob@example.org"}


@pytest.fixture(scope="module")
def ran(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.CompletedProcess[str], Path, list[str]]]:
    folder = project_copy(tmp_path_factory.mktemp("reader") / "project")
    env = subprocess_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with StandinServer() as server:
        assert PAGE_PORT in COMMAND
        command = COMMAND.replace(PAGE_PORT, f"127.0.0.1:{server.port}")
        done = subprocess.run(
            command, shell=True, cwd=folder, env=env, capture_output=True, text=True, timeout=90
        )
        yield done, folder, [sent_text(request) for request in model_requests(server)]


def stored(folder: Path) -> dict[str, list[str]]:
    with sqlite3.connect(folder / "plain_sdk.db") as conn:
        rows = conn.execute("SELECT session_id, message_data FROM agent_messages ORDER BY id").fetchall()
    held: dict[str, list[str]] = {}
    for session_id, data in rows:
        held.setdefault(session_id, []).append(data)
    return held


def test_the_plain_sdk_example_prints_what_the_page_shows(ran):
    done, _, _ = ran
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    printed = done.stdout.splitlines()
    for excerpt in PAGE.lines("text"):
        assert excerpt in printed


def test_each_users_session_holds_only_their_own_turns(ran):
    _, folder, _ = ran
    held = stored(folder)
    assert {session: len(items) for session, items in held.items()} == {
        "user_alice": 4,
        "user_bob": 4,
        "user_carol": 2,
    }
    for session, items in held.items():
        text = "\n".join(items)
        for owner, email in EMAILS.items():
            assert (email in text) == (owner == session), f"{session} holds {email}"


def test_no_model_request_carried_two_users_facts(ran):
    _, _, requests = ran
    assert len(requests) == 5  # one model call per turn: no handoff, no tool
    assert all(sum(email in text for email in EMAILS.values()) <= 1 for text in requests)
    assert sum("alice@example.com" in text for text in requests) == 2


def test_the_example_imports_nothing_from_the_project():
    source = (ROOT / "examples" / "plain_sdk.py").read_text()
    assert "multisessions" not in source and "import agent\n" not in source and "from agent " not in source
    assert len(source.splitlines()) <= 40


async def test_sdk_canary_two_plain_turns_on_one_session_interleave(tmp_path):
    arrived, both_in = 0, asyncio.Event()

    async def answer(call):
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 5)  # the second message came before the first answer
        return reply("answer to " + user_texts(call.input)[-1])

    model = ScriptedModel([ModelStep.respond(answer) for _ in range(2)])
    session = SQLiteSession("user_dana", str(tmp_path / "plain.db"))
    bot, config = Agent(name="Bot"), RunConfig(model=model)
    await asyncio.gather(
        *(Runner.run(bot, text, session=session, run_config=config) for text in ("one", "two"))
    )
    roles = [item.get("role") for item in await session.get_items()]
    assert roles == ["user", "user", "assistant", "assistant"], (
        "the SDK now orders turns: update docs/plain-sdk.md"
    )
    for call in model.calls:  # each answer was computed from a history without the other's answer
        assert [item.get("role") for item in call.input] in (["user"], ["user", "user"])
    session.close()


async def test_sdk_canary_a_plain_session_holds_half_a_turn_while_a_tool_waits_for_approval(tmp_path):
    @function_tool(needs_approval=True)
    def refund(order_id: str) -> str:
        """Refund an order."""
        return f"refunded {order_id}"

    model = ScriptedModel([[function_call("refund", {"order_id": "5512"}, call_id="call-plain-1")]])
    session = SQLiteSession("thread_refund", str(tmp_path / "plain.db"))
    result = await Runner.run(
        Agent(name="Billing", tools=[refund]),
        "refund 5512",
        session=session,
        run_config=RunConfig(model=model),
    )
    assert [call.name for call in result.interruptions] == ["refund"]
    kinds = [item.get("type") or item.get("role") for item in await session.get_items()]
    assert kinds == ["user", "function_call"], "the SDK now keeps a paused turn out: update docs/plain-sdk.md"
    session.close()
