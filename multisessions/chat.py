"""``python agent.py chat``: talk to the support agents yourself, in the session the naming helpers give.

    python agent.py chat --user alice [--tenant T] [--feature chat | --thread ID | --date today|YYYYMMDD]

The session continues across runs (it lives in the store). In the chat: ``/user NAME`` switches
user and session, ``/history`` shows this session, ``/sessions`` the inventory, ``/quit`` leaves;
end of input leaves too. Without ``--tenant`` the chat is in the sessions with no tenant
(``user_alice``), never in the demos' (``demo:user_alice``) or another app's.

A store that fails outside a turn (reading or saving the last agent, ``/history``,
``/sessions``) ends the chat with one line and exit 1: what was said so far is kept.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, date, datetime
from typing import Any, TextIO

from agents import Agent, RunConfig
from agents.memory import Session
from agents.models.interface import Model
from agents.stream_events import AgentUpdatedStreamEvent, RawResponsesStreamEvent
from openai.types.responses import ResponseTextDeltaEvent

from multisessions.errors import StoreError, TurnFailed
from multisessions.inventory import format_listing, list_sessions
from multisessions.items import history_lines, read_all
from multisessions.naming import dated_session_id, feature_session_id, thread_session_id, user_session_id
from multisessions.stores import SessionStore, close_session, driver_errors, scrub
from multisessions.summaries import Summaries
from multisessions.turns import stream_turn, why_it_failed


def chat_session_id(
    user: str, *, feature: str | None, thread: str | None, day: str | None, tenant: str | None = None
) -> str:
    """The session id for this chat, from the naming helpers (``ValueError`` on bad parts)."""
    if thread is not None:
        return thread_session_id(thread, tenant=tenant)
    if feature is not None:
        return feature_session_id(feature, user, tenant=tenant)
    if day is not None:
        when: date | str = datetime.now(UTC).date() if day == "today" else day
        return dated_session_id(user, when, tenant=tenant)
    return user_session_id(user, tenant=tenant)


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
    tenant: str | None = None,
    stdin: TextIO | None = None,
    store_url: str | None = None,
    summaries: Summaries | None = None,
) -> int:
    """Read messages from ``stdin`` until ``/quit`` or end of input; returns the exit code.

    Each turn goes to the agent that answered the session's last turn (written with that
    turn), or to ``first_agent`` in a new session. ``store_url`` is only used to scrub its
    password from a driver's error text.
    """
    stdin = sys.stdin if stdin is None else stdin
    run_config = RunConfig(model=model)
    interactive = stdin.isatty()

    def open_for(name: str) -> Session:
        session_id = chat_session_id(name, feature=feature, thread=thread, day=day, tenant=tenant)
        print(f"[{session_id}] chatting as {name} in {store.name} (/user NAME, /history, /sessions, /quit)")
        return store.open(session_id)

    session = open_for(user)
    lines = _Lines(stdin)

    async def _loop() -> int:
        nonlocal session, user
        while True:
            if interactive:
                print(f"{user}> ", end="", flush=True)
            lines.answering = ""
            line = await lines.next()
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
                    chat_session_id(name, feature=feature, thread=thread, day=day, tenant=tenant)
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
                for row in format_listing(await list_sessions(store, tenant=tenant)):
                    print(f"  {row}")
            elif text.startswith("/"):
                print("unknown command; try /user NAME, /history, /sessions or /quit")
            else:
                lines.answering = text
                try:
                    await _streamed_answer(agents_by_name[first_agent], session, text, run_config, summaries)
                except TurnFailed as exc:
                    where = getattr(store, "db_path", store.name)
                    outcome = "nothing was saved" if exc.saved is False else "it may have been saved"
                    print(f"error: {why_it_failed(exc, where=where, store_url=store_url)} ({outcome})")
                    continue
                except ValueError as exc:
                    print(f"error: {exc}")
                    continue

    store_failures: tuple[type[BaseException], ...] = (StoreError, *driver_errors())
    try:
        return await _loop()
    except asyncio.CancelledError:
        # Ctrl-C: leave at once; say what was typed and never sent (a running turn saves nothing).
        unsent = [text for text in (lines.answering, lines.unsent()) if text]
        if interactive or unsent:
            said = "; ".join(repr(text) for text in unsent)
            print(
                f"\n[{session.session_id}] not sent: {said} (nothing saved)" if said else "", file=sys.stderr
            )
        raise
    except store_failures as exc:
        text = str(exc).strip()
        reason = scrub(text.splitlines()[0] if text else type(exc).__name__, store_url)
        print(f"error: {reason} (chat ended; what was said so far is kept)", file=sys.stderr)
        return 1
    finally:
        await close_session(session)


async def _streamed_answer(
    agent: Agent[Any], session: Session, text: str, run_config: RunConfig, summaries: Summaries | None = None
) -> None:
    """Print the answer as it streams, prefixed with the session and the agent that answers (the
    session's current agent, or the one a handoff leads to). A turn paused for a supervisor's
    approval prints what waits."""
    prefix = f"[{session.session_id}]"
    speaking: str | None = None
    current = agent.name
    async with stream_turn(agent, session, text, run_config=run_config, summaries=summaries) as result:
        async for event in result.stream_events():
            if isinstance(event, AgentUpdatedStreamEvent):
                current = event.new_agent.name
            elif isinstance(event, RawResponsesStreamEvent) and isinstance(
                event.data, ResponseTextDeltaEvent
            ):
                if speaking is None:
                    speaking = current
                    print(f"{prefix} {current}: ", end="", flush=True)
                # Each line of a multi-line answer keeps the session prefix.
                print(event.data.delta.replace("\n", f"\n{prefix}   "), end="", flush=True)
    if result.interruptions:
        for call in result.interruptions:
            print(
                f"{prefix}   paused: {call.name}({call.arguments}) needs a supervisor: "
                f"python agent.py approvals approve {session.session_id}"
            )
        return
    if speaking is None:  # a model that does not stream text: print the whole answer
        print(f"{prefix} {result.last_agent.name}: {result.final_output}", end="")
    print()


class _Lines:
    """The chat's input, a line at a time, read without blocking the event loop.

    A blocking ``readline`` would hold the loop until Enter: Ctrl-C could not stop the chat, and
    the line typed meanwhile was thrown away. From a terminal or a pipe the loop waits for the
    descriptor to be readable instead, so Ctrl-C ends the chat at once; anything else (a file,
    an in-memory stream) is read as it is, since it never blocks.
    """

    def __init__(self, stdin: TextIO) -> None:
        self.stdin = stdin
        self.buffer = b""
        self.answering = ""
        """The message being answered now: unsaved until its turn ends."""
        self.encoding = getattr(stdin, "encoding", None) or "utf-8"
        try:
            self.fd: int | None = stdin.fileno()
        except (AttributeError, OSError, ValueError):  # no descriptor (io.StringIO)
            self.fd = None

    async def next(self) -> str:
        """The next line with its newline; "" at end of input."""
        if self.fd is None:
            return self.stdin.readline()
        loop = asyncio.get_running_loop()
        while b"\n" not in self.buffer:
            readable = loop.create_future()
            try:
                loop.add_reader(self.fd, _wake, readable)
            except (OSError, ValueError, NotImplementedError):  # a regular file: reading never blocks
                return self.stdin.readline()
            try:
                await readable
            finally:
                loop.remove_reader(self.fd)
            chunk = os.read(self.fd, 65536)
            if not chunk:  # end of input: a last line without its newline still counts
                line, self.buffer = self.buffer, b""
                return line.decode(self.encoding, errors="replace")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode(self.encoding, errors="replace") + "\n"

    def unsent(self) -> str:
        """What was read and not yet handed to the chat."""
        return self.buffer.decode(self.encoding, errors="replace").strip()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
