"""``run_turn``: one turn at a time per session, all or nothing.

The SDK writes the user's message to the session *before* it calls the model, and writes the
answer afterwards, in separate writes. A failure in between leaves an orphan user message (a
retry then sends it twice); a crash leaves half a turn; two turns on one session interleave.

``PendingTurn`` fixes all three without touching the SDK: it stands in for the session during
``Runner.run``, reads through to the real session, and holds the turn's writes in memory. Only
when the run succeeds does ``commit()`` write them, in one ``add_items`` call (one transaction
on SQLite and PostgreSQL, one pipeline on Redis). A failed or cancelled turn writes nothing.
Turns on one session id run one at a time, across tasks, processes and machines (locks.py): a
turn reads the history, calls the model and commits while it holds the session's lease.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from agents import Agent, Runner, RunResult, RunResultStreaming, RunState
from agents.items import TResponseInputItem
from agents.memory import Session, SessionSettings
from agents.memory.session_settings import resolve_session_limit
from agents.stream_events import StreamEvent

from multisessions.approvals import PausedTurn, paused_turn
from multisessions.errors import AwaitingApproval, MultiSessionsError, SessionBusy, StoreError, TurnFailed
from multisessions.locks import Lease, hold_session
from multisessions.locks import held_locks as held_locks  # re-exported for callers and tests
from multisessions.models import describe_failure
from multisessions.stores import SessionStore, leases_for, store_of

MAX_MESSAGE_CHARS = 100_000
"""Longer messages are refused: no model takes them whole, and they bloat every later turn."""


def check_message(user_input: object) -> str:
    """The message as text, or ``ValueError`` saying what is wrong with it."""
    if isinstance(user_input, bytes | bytearray):
        raise ValueError("message is bytes; decode it to text first")
    if not isinstance(user_input, str):
        raise ValueError(f"message must be text, got {type(user_input).__name__}")
    if not user_input.strip():
        raise ValueError("message is empty")
    if len(user_input) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message is {len(user_input):,} characters long (limit {MAX_MESSAGE_CHARS:,})")
    try:
        user_input.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("message is not valid Unicode (it holds a lone surrogate)") from None
    return user_input


class PendingTurn:
    """A session stand-in that reads through to ``session`` and keeps this turn's writes."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.session_id = session.session_id
        self.session_settings: SessionSettings | None = getattr(session, "session_settings", None)
        self.pending: list[TResponseInputItem] = []

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The stored history followed by this turn's unsaved items, newest ``limit`` of them."""
        limit = resolve_session_limit(limit, self.session_settings)
        if limit is None:
            return [*await self.session.get_items(), *self.pending]
        if limit <= 0:
            return [*await self.session.get_items(limit), *self.pending]
        if len(self.pending) >= limit:
            return list(self.pending[-limit:])
        stored = await self.session.get_items(limit - len(self.pending))
        return [*stored, *self.pending]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Hold the items until the turn commits."""
        self.pending.extend(items)

    async def pop_item(self) -> TResponseInputItem | None:
        """Take back the newest unsaved item (the SDK's retry path); stored items stay put."""
        if self.pending:
            return self.pending.pop()
        return None

    async def clear_session(self) -> None:
        """Clearing mid-turn is not something a turn may do."""
        raise RuntimeError("a turn may not clear its session")

    async def commit(self, attempts: int = 6) -> None:
        """Write the whole turn in one ``add_items`` call, retrying a SQLite file another process holds.

        SQLite waits 5 s for a lock and then raises "database is locked"; the failed write was
        rolled back, so trying again is safe. After ``attempts`` tries the error is raised.
        """
        items = self.pending
        if not items:
            return
        for attempt in range(attempts):
            try:
                await self.session.add_items(items)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        self.pending = []


async def run_turn(agent: Agent[Any], session: Session, user_input: str, **runner_kwargs: Any) -> RunResult:
    """Run one turn on ``session``: never two at once on one session id, all or nothing.

    The turn's items reach the store only if the whole turn succeeds; a failed or cancelled
    turn leaves the session exactly as it was and raises ``TurnFailed`` (or the cancellation).
    An empty, over-long or non-text message raises ``ValueError`` before anything runs.
    """
    user_input = check_message(user_input)
    async with _turn_on(session) as lease:
        turn = PendingTurn(session)
        try:
            await _refuse_if_waiting(session)
            result = await Runner.run(agent, user_input, session=turn, **runner_kwargs)
            await lease.confirm()  # no other turn can have run on this session meanwhile
            await _finish(agent, session, turn, result)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc) from exc
        return result


async def resume_turn(
    agent: Agent[Any],
    session: Session,
    *,
    approve: bool,
    reason: str | None = None,
    **runner_kwargs: Any,
) -> RunResult:
    """Approve (or reject, with ``reason`` sent to the model) the turn paused on ``session``, and run it on.

    ``agent`` is the agent the paused turn started with. Works from any process: the paused
    turn is read from the store. The resumed turn is committed whole, with its paused part;
    if it pauses again, it is kept for the next decision. Raises ``TurnFailed`` (the session
    and the paused turn unchanged) if it fails, or if no turn is waiting.
    """
    async with _turn_on(session) as lease:
        try:
            store = _store_for_approvals(session)
            record = await store.load_pending(session.session_id)
            if record is None:
                raise ValueError(f"no turn is waiting for approval on session {session.session_id!r}")
            paused = PausedTurn.loads(record)
            if paused.starting_agent != agent.name:
                raise ValueError(
                    f"the paused turn started with {paused.starting_agent!r}, not {agent.name!r}"
                )
            state = await RunState.from_string(agent, paused.state)
            for item in state.get_interruptions():
                if approve:
                    state.approve(item)
                else:
                    state.reject(item, rejection_message=reason)
            turn = PendingTurn(session)
            turn.pending = list(paused.items)  # the paused part, as if the SDK had just written it
            result = await Runner.run(agent, state, session=turn, **runner_kwargs)
            await lease.confirm()
            await _finish(agent, session, turn, result)
            if not result.interruptions:
                await store.save_pending(session.session_id, None)  # decided, and whole in the history
        except Exception as exc:
            raise TurnFailed(session.session_id, exc) from exc
        return result


def why_it_failed(failure: TurnFailed) -> str:
    """The one line for a failed turn: our own errors say it themselves; a model's gets a fix."""
    if isinstance(failure.cause, MultiSessionsError):
        return str(failure.cause)
    return describe_failure(failure.cause)


def _store_for_approvals(session: Session) -> SessionStore:
    store = store_of(session)
    if store is None:
        raise StoreError("this session has no store to keep a paused turn in (an in-memory session?)")
    return store


async def _refuse_if_waiting(session: Session) -> None:
    store = store_of(session)
    if store is not None and await store.load_pending(session.session_id) is not None:
        raise AwaitingApproval(
            f"session {session.session_id!r} waits for a supervisor to approve or reject a tool call; "
            "see: python agent.py approvals list"
        )


async def _finish(
    agent: Agent[Any], session: Session, turn: PendingTurn, result: RunResult | RunResultStreaming
) -> None:
    """Commit the whole turn, or, if it paused for approval, keep it beside the session instead."""
    store = store_of(session)
    if result.interruptions:
        if store is None:
            raise StoreError("a turn paused for approval needs a store to wait in (not an in-memory session)")
        paused = paused_turn(session.session_id, agent.name, result, turn.pending)
        await store.save_pending(session.session_id, paused.dumps())
        return
    await turn.commit()  # the whole turn, in one write


@asynccontextmanager
async def _turn_on(session: Session) -> AsyncIterator[Lease]:
    """Hold the session for one turn (here and in every process); a busy session fails the turn."""
    try:
        async with hold_session(session.session_id, leases_for(session)) as lease:
            yield lease
    except SessionBusy as exc:
        raise TurnFailed(session.session_id, exc) from exc


@asynccontextmanager
async def stream_turn(
    agent: Agent[Any], session: Session, user_input: str, **runner_kwargs: Any
) -> AsyncIterator[RunResultStreaming]:
    """One streamed turn, whole or not at all: ``async with stream_turn(...) as result:``.

    Yields the SDK's ``RunResultStreaming``; read ``result.stream_events()`` inside the block.
    The session's lock is held for the whole stream, and the turn is committed in one write
    only when the stream was read to its end. An exception or cancellation (raised as
    ``TurnFailed`` or the cancellation), or leaving the block before the stream ends, leaves the
    session exactly as it was.
    """
    user_input = check_message(user_input)
    async with _turn_on(session) as lease:
        try:
            await _refuse_if_waiting(session)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc) from exc
        turn = PendingTurn(session)
        result = Runner.run_streamed(agent, user_input, session=turn, **runner_kwargs)
        read_to_the_end = _watch_the_end(result)
        try:
            yield result
        except BaseException as exc:
            await _abandon(result)
            if isinstance(exc, Exception):
                raise TurnFailed(session.session_id, exc) from exc
            raise
        if not read_to_the_end():
            await _abandon(result)  # the reader left early: nothing of this turn is kept
            return
        try:
            await lease.confirm()
            await _finish(agent, session, turn, result)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc) from exc


def _watch_the_end(result: RunResultStreaming) -> Callable[[], bool]:
    """Make ``result.stream_events()`` note when it is read to its end (then the run is whole)."""
    events = result.stream_events
    finished = False

    async def stream_events() -> AsyncIterator[StreamEvent]:
        nonlocal finished
        async for event in events():
            yield event
        finished = True  # stream_events returns only once the run settled without error

    result.stream_events = stream_events  # type: ignore[method-assign]
    return lambda: finished


async def _abandon(result: RunResultStreaming) -> None:
    """Stop the run and let its tasks settle; whatever it wrote went to the discarded turn."""
    result.cancel()
    if result.run_loop_task is not None:
        await asyncio.gather(result.run_loop_task, return_exceptions=True)
