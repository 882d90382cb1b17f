"""``python agent.py chat``: talk to the support agents yourself, in the session the naming helpers give.

    python agent.py chat --user alice [--feature chat | --thread ID | --date today|YYYYMMDD]

The session continues across runs (it lives in the store). In the chat: ``/user NAME`` switches
user and session, ``/history`` shows this session, ``/sessions`` the inventory, ``/quit`` leaves;
end of input leaves too. Try: tell it your name as alice, ``/user bob``, ask for the name,
``/user alice``, ask again.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime
from typing import Any

from agents import RunConfig
from agents.memory import Session

from naming import dated_session_id, feature_session_id, thread_session_id, user_session_id
from stores import SessionStore, close_session, format_listing, history_lines, list_sessions, read_all
from turns import TurnFailed, describe_failure


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
    store: SessionStore, model: Any, user: str, *, feature: str | None, thread: str | None, day: str | None
) -> int:
    """Read messages from standard input until ``/quit`` or end of input; returns the exit code."""
    from agent import run_turn, support_agents

    agents_by_name = support_agents()
    triage = agents_by_name["Triage Agent"]
    run_config = RunConfig(model=model)
    interactive = sys.stdin.isatty()

    def open_for(name: str) -> Session:
        session_id = chat_session_id(name, feature=feature, thread=thread, day=day)
        print(f"[{session_id}] chatting as {name} in {store.name} (/user NAME, /history, /sessions, /quit)")
        return store.open(session_id)

    session = open_for(user)
    try:
        while True:
            if interactive:
                print(f"{user}> ", end="", flush=True)
            line = sys.stdin.readline()
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
                agent = agents_by_name.get(await store.load_last_agent(session.session_id) or "", triage)
                try:
                    result = await run_turn(agent, session, text, run_config=run_config)
                except TurnFailed as exc:
                    print(f"error: {describe_failure(exc.cause)} (nothing was saved)")
                    continue
                except ValueError as exc:
                    print(f"error: {exc}")
                    continue
                await store.save_last_agent(session.session_id, result.last_agent.name)
                print(f"[{session.session_id}] {result.last_agent.name}: {result.final_output}")
    finally:
        await close_session(session)
