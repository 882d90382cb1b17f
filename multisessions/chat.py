"""``python agent.py chat``: talk to the support agents yourself, in the session the naming helpers give.

    python agent.py chat --user alice [--feature chat | --thread ID | --date today|YYYYMMDD]

The session continues across runs (it lives in the store). In the chat: ``/user NAME`` switches
user and session, ``/history`` shows this session, ``/sessions`` the inventory, ``/quit`` leaves;
end of input leaves too.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any, TextIO

from agents import Agent, RunConfig
from agents.memory import Session
from agents.models.interface import Model

from multisessions.errors import TurnFailed
from multisessions.failures import describe_failure
from multisessions.inventory import format_listing, list_sessions
from multisessions.items import history_lines, read_all
from multisessions.naming import dated_session_id, feature_session_id, thread_session_id, user_session_id
from multisessions.stores import SessionStore, close_session
from multisessions.turns import run_turn


def chat_session_id(user: str, *, feature: str | None, thread: str | None, day: str | None) -> str:
    """The session id for this chat, from the naming helpers (``ValueError`` on bad parts)."""
    if thread is not None:
        return thread_session_id(thread)
    if feature is not None:
        return feature_session_id(feature, user)
    if day is not None:
        when: date | str = datetime.now(UTC).date() if day == "today" else day
        return dated_session_id(user, when)
    return user_session_id(user)


async def chat(
    store: SessionStore,
    model: Model,
    agents_by_name: dict[str, Agent[Any]],
    user: str,
    *,
    first_agent: str,
    feature: str | None = None,
    thread: str | None = None,
    day: str | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Read messages from ``stdin`` until ``/quit`` or end of input; returns the exit code.

    Each turn goes to the agent that answered the session's last turn (kept beside the
    session), or to ``first_agent`` in a new session.
    """
    stdin = sys.stdin if stdin is None else stdin
    run_config = RunConfig(model=model)
    interactive = stdin.isatty()

    def open_for(name: str) -> Session:
        session_id = chat_session_id(name, feature=feature, thread=thread, day=day)
        print(f"[{session_id}] chatting as {name} in {store.name} (/user NAME, /history, /sessions, /quit)")
        return store.open(session_id)

    session = open_for(user)
    try:
        while True:
            if interactive:
                print(f"{user}> ", end="", flush=True)
            line = stdin.readline()
            if not line:
                return 0
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                return 0
            if text.startswith("/user"):
                name = text[len("/user") :].strip()
                try:
                    chat_session_id(name, feature=feature, thread=thread, day=day)
                except ValueError as exc:
                    print(f"error: {exc}")
                    continue
                await close_session(session)
                user, session = name, open_for(name)
            elif text == "/history":
                items = await read_all(session)
                print(f"[{session.session_id}] {len(items)} items")
                for entry in history_lines(items):
                    print(f"  {entry}")
            elif text == "/sessions":
                for row in format_listing(await list_sessions(store)):
                    print(f"  {row}")
            elif text.startswith("/"):
                print("unknown command; try /user NAME, /history, /sessions or /quit")
            else:
                last = await store.load_last_agent(session.session_id)
                agent = agents_by_name.get(last or "", agents_by_name[first_agent])
                try:
                    result = await run_turn(agent, session, text, run_config=run_config)
                except TurnFailed as exc:
                    print(f"error: {describe_failure(exc.cause)} (nothing was saved)")
                    continue
                except ValueError as exc:
                    print(f"error: {exc}")
                    continue
                await store.save_last_agent(session.session_id, result.last_agent.name)
                # Every line carries the session id, also each line of an answer that spans several.
                prefix = f"[{session.session_id}]"
                first, *rest = str(result.final_output).splitlines() or [""]
                print(f"{prefix} {result.last_agent.name}: {first}")
                for more in rest:
                    print(f"{prefix}   {more}")
    finally:
        await close_session(session)
