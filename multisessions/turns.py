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

Where nothing could make the two differ, a turn skips the SDK's session bookkeeping: the
history is passed by hand and the turn's items are built as the SDK would (direct.py), then
committed the same way. The SDK's session path stays for everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import inspect
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from agents import Agent, RunConfig, Runner, RunResult, RunResultStreaming, RunState
from agents.items import TResponseInputItem
from agents.memory import (
    OpenAIConversationsSession,
    OpenAIResponsesCompactionArgs,
    Session,
    SessionSettings,
    is_openai_responses_compaction_aware_session,
)
from agents.memory.session_settings import resolve_session_limit
from agents.run_context import RunContextWrapper
from agents.stream_events import StreamEvent

from multisessions import observers, sdk_private
from multisessions.approvals import PausedTurn, paused_turn
from multisessions.direct import can_pass_history, handoff_target, history_limit, model_input, turn_items
from multisessions.errors import (
    AwaitingApproval,
    CommitUnconfirmed,
    MultiSessionsError,
    StoreError,
    TurnFailed,
)
from multisessions.failures import describe_failure
from multisessions.items import message_text, title_of
from multisessions.locks import DEFAULT_ON_BUSY, Lease, OnBusy, check_on_busy, hold_session
from multisessions.locks import held_locks as held_locks  # re-exported for callers and tests
from multisessions.memory import running_turn
from multisessions.naming import memory_scope
from multisessions.observers import outcome_of
from multisessions.stores import (
    KEEP,
    SessionStore,
    Summary,
    TurnIO,
    TurnStart,
    TurnWrite,
    commit_outcome_unknown,
    describe_sqlite_failure,
    driver_errors,
    refuse_sealed,
    scrub,
    store_of,
)
from multisessions.summaries import Summaries, due, fold, summary_message
from multisessions.titles import Titles, write_title

logger = logging.getLogger(__name__)
_Context = RunContextWrapper[Any] | None  # the SDK's run context, as it passes it to sessions

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
    """A session stand-in that reads through to ``session`` and keeps this turn's writes.

    It offers the SDK exactly what ``session`` offers: its ``session_settings``; the run context
    (``wrapper``) when ``session`` takes it (then this is a ``ContextPendingTurn``, see
    ``__new__``); ``run_compaction`` when ``session`` compacts, run after the commit
    (``compact_after_commit``). An ``OpenAIConversationsSession`` is refused (``StoreError``).
    """

    def __new__(cls, session: Session, start: TurnStart | None = None) -> PendingTurn:
        # The SDK hands the run context only to a session whose four history methods all take
        # ``wrapper``, so the stand-in must take it exactly when ``session`` does.
        if cls is PendingTurn and _takes_the_run_context(session):
            cls = ContextPendingTurn
        return super().__new__(cls)

    def __init__(self, session: Session, start: TurnStart | None = None) -> None:
        if isinstance(session, OpenAIConversationsSession):
            raise StoreError(
                "run_turn cannot hold an OpenAIConversationsSession's turn: OpenAI's server stores "
                "it 20 items per request (no all-or-nothing write) and the SDK cleans its items only "
                "for that exact class; run Runner.run(agent, message, session=session) instead"
            )
        self.session = session
        self.session_id = session.session_id
        self.session_settings: SessionSettings | None = getattr(session, "session_settings", None)
        self.pending: list[TResponseInputItem] = []
        self.start = start
        """The history the store read while the turn took its lease: reads are served from it."""
        self.wrapper: RunContextWrapper[Any] | None = None
        """The run context the SDK last passed (only to a ``ContextPendingTurn``); the commit uses it."""
        self.compaction: tuple[OpenAIResponsesCompactionArgs | None, _Context] | None = None
        """The SDK's latest compaction request during this turn, run by ``compact_after_commit``."""
        self.deferred_compaction: tuple[str, bool | None, _Context] | None = None
        self.current_agent: Agent[Any] | None = None
        self.scope = memory_scope(self.session_id) if isinstance(self.session_id, str) else None
        """Whose memory the turn reads and writes (its tenant and user); None if the id names no user."""
        self.memory: dict[str, str] = dict(start.memory) if start is not None else {}
        """The user's memory as the turn sees it (with what it remembered so far)."""
        self.memory_writes: dict[str, str] = {}
        """What the turn remembered: written with its items, in its one write."""
        self.window: int | None = None
        """With summaries: the newest items sent as they are (``summaries.Summaries``)."""
        self.summary: Summary | None = None
        self.total = 0
        """With summaries: how many items the session held when the turn started."""
        self.new_summary: Summary | None = None
        self.title: str | None = None
        """The model's title for a conversation's first turn (``titles.Titles``), if asked for."""
        self.finish: Callable[[RunResult | RunResultStreaming], Awaitable[None]] | None = None
        self.kept: RunResult | RunResultStreaming | None = None

    @property
    def agent(self) -> Agent[Any]:
        """The session's current agent, the one to run this turn on: the agent that answered the
        session's last turn (``one_turn`` finds it)."""
        if self.current_agent is None:
            raise RuntimeError("turn.agent is known inside `async with one_turn(session, agent) as turn:`")
        return self.current_agent

    @property
    def _ignore_ids_for_matching(self) -> bool:
        # The SDK compares items without their ids for stores that say so; keep the store's answer.
        return sdk_private.ignores_ids(self.session)

    def _context(self) -> dict[str, Any]:
        """Keyword arguments passing the run context on to ``session``, when it takes it."""
        return {"wrapper": self.wrapper} if self.wrapper is not None else {}

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The stored history followed by this turn's unsaved items, newest ``limit`` of them; with
        summaries, at most the window, after the summary of what is older."""
        limit = resolve_session_limit(limit, self.session_settings)
        if self.window is None:
            return await self._history(limit)
        # Every item the summary does not cover yet: at least the window, at most window + threshold
        # (more only while a summarizer keeps failing). Nothing falls between the two.
        unfolded = max(self.window, self.total - (self.summary.covered if self.summary is not None else 0))
        if limit is None or limit > unfolded:
            limit = unfolded
        items = _without_leading_orphans(await self._history(limit))
        return [summary_message(self.summary), *items] if self.summary is not None else items

    async def _history(self, limit: int | None) -> list[TResponseInputItem]:
        if limit is None:
            stored = self._read_ahead(None)
            if stored is None:
                stored = await self.session.get_items(**self._context())
            return [*stored, *self.pending]
        if limit <= 0:
            return [*await self.session.get_items(limit, **self._context()), *self.pending]
        if len(self.pending) >= limit:
            return list(self.pending[-limit:])
        stored = self._read_ahead(limit - len(self.pending))
        if stored is None:
            stored = await self.session.get_items(limit - len(self.pending), **self._context())
        return [*stored, *self.pending]

    def _read_ahead(self, want: int | None) -> list[TResponseInputItem] | None:
        """The newest ``want`` stored items (all: None) from the turn's start, if it read that many.

        Nothing else writes the session while the turn holds its lease, so what was read when
        the lease was taken is still the stored history."""
        start = self.start
        if start is None:
            return None
        if want is None:
            return list(start.history) if start.limit is None else None
        if start.limit is None or want <= start.limit:
            return list(start.history[-want:])
        return None

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

    async def commit(self, result: RunResult | RunResultStreaming) -> None:
        """Keep ``result``, the run this turn stood in for: write its items, the agent that answered
        (or the paused tool call) in one write when the ``one_turn`` block ends without an error.

        Without a call to ``commit`` the block writes nothing: a turn is all or nothing."""
        if self.finish is None:
            raise RuntimeError("commit() keeps a run inside `async with one_turn(...) as turn:` only")
        if isinstance(result, RunResultStreaming) and not result.is_complete:
            raise RuntimeError("read the streamed run to its end (result.stream_events()) before commit()")
        self.kept = result

    async def write_items(self, attempts: int = 6) -> None:
        """Write the whole turn in one ``add_items`` call, retrying a SQLite file another process holds.

        SQLite waits 5 s for a lock and then raises "database is locked"; the failed write was
        rolled back, so trying again is safe. After ``attempts`` tries the error is raised.
        """
        items = self.pending
        if not items:
            return
        for attempt in range(attempts):
            try:
                await self.session.add_items(items, **self._context())
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        self.pending = []

    @property
    def run_compaction(self) -> Callable[..., Awaitable[None]]:
        """Present exactly when ``session`` compacts: then the SDK's request is kept for after the commit."""
        if not is_openai_responses_compaction_aware_session(self.session):
            raise AttributeError("run_compaction")  # so the SDK sees no compaction, as with the session
        return self._request_compaction

    async def _request_compaction(
        self, args: OpenAIResponsesCompactionArgs | None = None, *, wrapper: _Context = None
    ) -> None:
        # Compacting now would rewrite history before this turn is in it: note the latest request.
        self.compaction = (args, wrapper)

    async def _defer_compaction(
        self, response_id: str, store: bool | None = None, *, wrapper: _Context = None
    ) -> None:
        # The SDK defers compaction while a response's tool outputs are still local; note it too.
        self.deferred_compaction = (response_id, store, wrapper)

    async def compact_after_commit(self) -> None:
        """Run the compaction the SDK asked for during the turn, now that the whole turn is stored.

        The request runs as the SDK would have run it (automatic: only history the model just saw
        is compacted, and the session's decision hook decides). A turn that ended while its
        compaction was deferred passes the deferral on, so the next turn's compaction is forced.
        """
        compaction, self.compaction = self.compaction, None
        deferred, self.deferred_compaction = self.deferred_compaction, None
        try:
            if compaction is not None:
                args, wrapper = compaction
                await _run_compaction(self.session, args, wrapper)
            elif deferred is not None:
                defer = sdk_private.deferred_compaction(self.session)
                if defer is not None:
                    response_id, store, wrapper = deferred
                    await defer(response_id, store, **_context_for(defer, wrapper))
        except Exception as exc:
            # The turn is stored; failing it now would make the caller send the message twice.
            # The session keeps its uncompacted history and may compact after a later turn.
            logger.warning("session %r: compaction after the turn failed (%s)", self.session_id, exc)


class ContextPendingTurn(PendingTurn):
    """A ``PendingTurn`` for a context-aware session: the SDK's run context is passed on to it."""

    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """As ``PendingTurn.get_items``, reading with the run context."""
        self.wrapper = wrapper or self.wrapper
        return await super().get_items(limit)

    async def add_items(
        self, items: list[TResponseInputItem], *, wrapper: RunContextWrapper[Any] | None = None
    ) -> None:
        """As ``PendingTurn.add_items``; the commit writes with the last run context seen."""
        self.wrapper = wrapper or self.wrapper
        await super().add_items(items)

    async def pop_item(self, *, wrapper: RunContextWrapper[Any] | None = None) -> TResponseInputItem | None:
        """As ``PendingTurn.pop_item``."""
        self.wrapper = wrapper or self.wrapper
        return await super().pop_item()

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """As ``PendingTurn.clear_session``."""
        await super().clear_session()


def _takes_wrapper(method: object) -> bool:
    """Whether ``method`` has a ``wrapper`` parameter passable by keyword: the SDK's own test."""
    try:
        parameters = inspect.signature(method).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.name == "wrapper" and p.kind in keyword for p in parameters)


_HISTORY_METHODS = ("get_items", "add_items", "pop_item", "clear_session")


def _takes_the_run_context(session: Session) -> bool:
    """Whether the SDK passes ``session`` the run context: all four history methods must take it."""
    own = getattr(session, "__dict__", {})
    if any(name in own for name in _HISTORY_METHODS):  # methods set on the object itself
        return all(_takes_wrapper(getattr(session, name, None)) for name in _HISTORY_METHODS)
    return _class_takes_the_run_context(type(session))


@functools.cache
def _class_takes_the_run_context(cls: type) -> bool:
    # Reading four signatures costs a measurable share of a turn; a class's methods do not change.
    return all(_takes_wrapper(getattr(cls, name, None)) for name in _HISTORY_METHODS)


def _context_for(method: object, wrapper: RunContextWrapper[Any] | None) -> dict[str, Any]:
    return {"wrapper": wrapper} if wrapper is not None and _takes_wrapper(method) else {}


async def _run_compaction(
    session: Session, args: OpenAIResponsesCompactionArgs | None, wrapper: RunContextWrapper[Any] | None
) -> None:
    """Call ``session.run_compaction`` the way the SDK does after a write (automatic compaction)."""
    assert is_openai_responses_compaction_aware_session(session)
    if wrapper is None:
        await session.run_compaction(args)
        return
    # The SDK marks its own post-write call automatic; without the mark the session would
    # compact its whole history instead of only what the model just saw.
    with sdk_private.automatic_compaction(wrapper):
        await session.run_compaction(args, **_context_for(session.run_compaction, wrapper))


async def run_turn(
    starting_agent: Agent[Any],
    session: Session,
    user_input: str,
    *,
    summaries: Summaries | None = None,
    titles: Titles | None = None,
    on_busy: OnBusy = DEFAULT_ON_BUSY,
    on_wait: Callable[[str], object] | None = None,
    **runner_kwargs: Any,
) -> RunResult:
    """Run one turn on ``session``: never two at once on one session id, all or nothing.

    The turn runs on the session's current agent: the one that answered its last turn, found by
    name among ``starting_agent`` and the agents it hands off to (``starting_agent`` for a new
    session). Everything the turn changes (its items, the agent that answered, a paused tool call)
    reaches the store in one write, only if the whole turn succeeds; a failed or cancelled turn
    leaves the session exactly as it was and raises ``TurnFailed`` (or the cancellation). An
    empty, over-long or non-text message raises ``ValueError`` before anything runs. With
    ``summaries``, the turn sends a summary and the newest items only (``summaries.py``).
    If another turn holds the session: ``on_busy="wait"`` (the default) queues behind it
    (``on_wait`` gets one line saying so), ``"reject"`` fails at once (``TurnFailed`` caused by
    ``SessionBusy``), ``"interrupt"`` stops it (its caller gets ``TurnInterrupted``) and runs this one.
    """
    user_input = check_message(user_input)
    runner_kwargs = _grouped(session.session_id, runner_kwargs)
    store = store_of(session)
    io = _turn_io(session, store)
    limit = summaries.window if summaries is not None else history_limit(session, runner_kwargs)
    async with _turn_on(session, store, io, limit, on_busy=on_busy, on_wait=on_wait) as lease:
        turn = PendingTurn(session, lease.start)
        try:
            agent = await _where_it_stands(turn, starting_agent, store, summaries)
            by_hand = await _input_by_hand(agent, turn, user_input, limit, runner_kwargs)
            with _running(turn):
                if by_hand is not None:  # the SDK's session bookkeeping skipped: same input, same items
                    prepared, new_input = by_hand
                    result = await Runner.run(agent, prepared, **runner_kwargs)
                    turn.pending = turn_items(new_input, result)
                else:
                    result = await Runner.run(agent, user_input, session=turn, **runner_kwargs)
            await _fold_if_due(turn, summaries, result, runner_kwargs)
            await _title_if_new(turn, titles, result, runner_kwargs)
            await _finish(agent, session, store, turn, result, lease, io)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc, saved=_saved(exc)) from exc
        return result


async def resume_turn(
    starting_agent: Agent[Any],
    session: Session,
    *,
    approve: bool,
    reason: str | None = None,
    on_busy: OnBusy = DEFAULT_ON_BUSY,
    on_wait: Callable[[str], object] | None = None,
    **runner_kwargs: Any,
) -> RunResult:
    """Approve (or reject, with ``reason`` sent to the model) the turn paused on ``session``, and run it on.

    ``starting_agent`` is the session's starting agent; the paused turn resumes on the agent it
    paused with, found by name among the agents it hands off to. Works from any process: the
    paused turn is read from the store. The decision is taken exactly once: the resumed turn,
    with its paused part, is committed in the same write that consumes the paused turn (or, if
    it pauses again, replaces it), so a second decision finds nothing waiting. Raises
    ``TurnFailed`` (the session and the paused turn unchanged) if it fails, or if no turn waits.
    A tool that has side effects should key them by its call id (``record_once``): a resume that
    fails after the tool ran runs it again when the decision is retried. ``on_busy`` and
    ``on_wait`` as for ``run_turn``.
    """
    runner_kwargs = _grouped(session.session_id, runner_kwargs)
    store = store_of(session)
    io = _turn_io(session, store)
    limit = history_limit(session, runner_kwargs)
    async with _turn_on(session, store, io, limit, on_busy=on_busy, on_wait=on_wait) as lease:
        try:
            if store is None:
                raise StoreError("this session has no store to keep a paused turn in (an in-memory session?)")
            record = await store.load_pending(session.session_id)
            if record is None:
                raise StoreError(
                    f"no turn is waiting for approval on session {session.session_id!r}; "
                    "see: python agent.py approvals list"
                )
            paused = PausedTurn.loads(record)
            agent = find_agent(starting_agent, paused.starting_agent)
            if agent is None:
                raise StoreError(
                    f"the paused turn started with {paused.starting_agent!r}, which {starting_agent.name!r} "
                    "does not hand off to; resume it with the agents it started with"
                )
            state = await RunState.from_string(agent, paused.state)
            for item in state.get_interruptions():
                if approve:
                    state.approve(item)
                else:
                    state.reject(item, rejection_message=reason)
            turn = PendingTurn(session, lease.start)
            await _load_memory(turn, store, lease.start)
            turn.pending = list(paused.items)  # the paused part, as if the SDK had just written it
            with _running(turn):
                result = await Runner.run(agent, state, session=turn, **runner_kwargs)
            await _finish(agent, session, store, turn, result, lease, io, decided=True)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc, saved=_saved(exc)) from exc
        return result


def find_agent(starting_agent: Agent[Any], name: str | None) -> Agent[Any] | None:
    """The agent called ``name`` among ``starting_agent`` and every agent reachable by its handoffs."""
    if name is None:
        return None
    seen: set[int] = set()
    waiting: list[Agent[Any]] = [starting_agent]
    while waiting:
        current = waiting.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.name == name:
            return current
        for handoff in current.handoffs:
            target = handoff if isinstance(handoff, Agent) else handoff_target(handoff)
            if target is not None:
                waiting.append(target)
    return None


async def _current_agent(
    starting_agent: Agent[Any], session: Session, store: SessionStore | None, start: TurnStart | None
) -> Agent[Any]:
    """The agent the session's next turn runs on: the one that answered last, if it is still in
    ``starting_agent``'s handoff graph (else ``starting_agent``, with a warning)."""
    if store is None:
        return starting_agent
    name = start.agent if start is not None else await store.load_last_agent(session.session_id)
    if name is None or name == starting_agent.name:
        return starting_agent
    found = find_agent(starting_agent, name)
    if found is None:
        logger.warning(
            "session %r: its last agent %r is not among %r and the agents it hands off to; "
            "the turn starts with %r",
            session.session_id,
            name,
            starting_agent.name,
            starting_agent.name,
        )
        return starting_agent
    return found


async def _where_it_stands(
    turn: PendingTurn, starting_agent: Agent[Any], store: SessionStore | None, summaries: Summaries | None
) -> Agent[Any]:
    """Where the session stands as the turn starts: no paused turn waiting, its current agent
    (returned, and kept as ``turn.agent``), its user's memory and, with summaries, its summary."""
    start = turn.start
    await _refuse_if_waiting(turn.session, store, start)
    turn.current_agent = await _current_agent(starting_agent, turn.session, store, start)
    await _load_memory(turn, store, start)
    await _load_summary(turn, store, summaries)
    # Written encrypted, read without the key: never send tokens to a model as the user's data.
    refuse_sealed(f"the memory of session {turn.session_id!r}'s user", turn.memory.values())
    refuse_sealed(f"session {turn.session_id!r}", [turn.summary.text] if turn.summary is not None else [])
    return turn.current_agent


async def _load_summary(turn: PendingTurn, store: SessionStore | None, settings: Summaries | None) -> None:
    """With summaries: the session's summary and size, and the window its turns send."""
    if settings is None:
        return
    if store is None:
        raise StoreError("summaries are kept in a store; this session has none (an in-memory session?)")
    turn.window = settings.window
    turn.summary, turn.total = await store.summary_state(turn.session_id)


async def _fold_if_due(
    turn: PendingTurn,
    settings: Summaries | None,
    result: RunResult | RunResultStreaming,
    kwargs: dict[str, Any],
) -> None:
    """Fold what passed out of the window into the summary, once ``threshold`` items have.

    A summarizer that fails leaves the summary as it was (the turn is kept; a later turn folds)."""
    if settings is None or result.interruptions:
        return
    covered = due(settings, turn.summary, turn.total + len(turn.pending))
    if covered is None:
        return
    start = turn.summary.covered if turn.summary is not None else 0
    try:
        # Only what the summary does not cover yet: a read of about window + threshold items,
        # however long the session (the SDK's newest-``limit`` read, oldest first).
        stored = await turn.session.get_items(turn.total - start) if turn.total > start else []
        older = [*stored, *turn.pending][: covered - start]
        async with asyncio.timeout(settings.timeout):  # a summarizer that hangs must not hold the turn
            turn.new_summary = await fold(settings, turn.summary, older, covered, kwargs.get("run_config"))
    except Exception as exc:  # TimeoutError too
        logger.warning(
            "session %r: summarizing older items failed (%s); kept the last summary", turn.session_id, exc
        )


async def _title_if_new(
    turn: PendingTurn, settings: Titles | None, result: RunResult | RunResultStreaming, kwargs: dict[str, Any]
) -> None:
    """A conversation's first turn: the model's title for it (``titles.py``), kept in ``turn.title``
    for the turn's one write. A title writer that fails leaves the first message as the title."""
    if settings is None or result.interruptions or turn.start is None or turn.start.history:
        return
    first = next((i for i in turn.pending if isinstance(i, dict) and i.get("role") == "user"), None)
    if first is None:
        return
    try:
        async with asyncio.timeout(settings.timeout):  # a title writer that hangs must not hold the turn
            turn.title = await write_title(settings, message_text(first), kwargs.get("run_config"))
    except Exception as exc:  # TimeoutError too
        reason = str(exc) or type(exc).__name__  # a timeout has no text of its own
        logger.warning(
            "session %r: writing a title failed (%s); its first message is its title", turn.session_id, reason
        )


def _without_leading_orphans(items: list[TResponseInputItem]) -> list[TResponseInputItem]:
    """A window that starts after a tool call still holds its output: drop such outputs."""
    calls = {
        item.get("call_id")
        for item in items
        if isinstance(item, dict) and item.get("type") == "function_call"
    }
    first = 0
    while (
        first < len(items)
        and isinstance(items[first], dict)
        and items[first].get("type") == "function_call_output"
        and items[first].get("call_id") not in calls
    ):
        first += 1
    return items[first:]


async def _load_memory(turn: PendingTurn, store: SessionStore | None, start: TurnStart | None) -> None:
    """The user's memory, when the store's start did not read it already."""
    if start is None and store is not None and turn.scope is not None:
        turn.memory = await store.load_memory(turn.scope)


@contextlib.contextmanager
def _running(turn: PendingTurn) -> Iterator[None]:
    """``turn`` is the running turn for the runs (and the tasks they make) started in this block."""
    token = running_turn.set(turn)
    try:
        yield
    finally:
        running_turn.reset(token)


def _saved(exc: BaseException) -> bool | None:
    """False: nothing of the turn was written. None: the store did not confirm a write it may have
    made (the connection was lost while the turn was being committed)."""
    return None if isinstance(exc, CommitUnconfirmed) else False


@asynccontextmanager
async def one_turn(
    session: Session,
    starting_agent: Agent[Any],
    *,
    summaries: Summaries | None = None,
    titles: Titles | None = None,
) -> AsyncIterator[PendingTurn]:
    """One turn on ``session``, one at a time and all or nothing, around the SDK's own run::

        async with one_turn(session, triage) as turn:
            result = await Runner.run(turn.agent, message, session=turn)
            await turn.commit(result)

    Entering waits for any other turn on the session id (in any process, through the store's
    lease) and reads where the session stands: its history and its current agent (``turn.agent``:
    the one that answered last, found among ``starting_agent`` and the agents it hands off to).
    ``turn`` is the session for ``Runner.run``: reads go through, writes wait in memory. When the
    block ends after ``turn.commit(result)``, the run's items and the agent that answered (or the
    paused tool call) are written in one write; if the block raises, or never commits, nothing
    is. Failures raise ``TurnFailed``. With ``summaries``, ``turn`` reads a summary and the newest
    items only, and the summary is brought up to date with the commit (by ``summaries.model``).
    """
    store = store_of(session)
    io = _turn_io(session, store)
    limit = summaries.window if summaries is not None else history_limit(session, {})
    async with _turn_on(session, store, io, limit) as lease:
        turn = PendingTurn(session, lease.start)
        try:
            agent = await _where_it_stands(turn, starting_agent, store, summaries)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc) from exc

        async def finish(result: RunResult | RunResultStreaming) -> None:
            await _fold_if_due(turn, summaries, result, {})
            await _title_if_new(turn, titles, result, {})
            await _finish(agent, session, store, turn, result, lease, io)

        turn.finish = finish
        running = running_turn.set(turn)  # the caller's runs see the turn's memory (memory.py)
        try:
            yield turn
            if turn.kept is not None:
                await finish(turn.kept)
        except Exception as exc:
            if isinstance(exc, TurnFailed):
                raise
            raise TurnFailed(session.session_id, exc, saved=_saved(exc)) from exc
        finally:
            turn.finish = None
            running_turn.reset(running)


def why_it_failed(
    failure: TurnFailed,
    *,
    where: object = "the store",
    store_url: str | None = None,
    secrets: Iterable[str] = (),
) -> str:
    """One true line for why a turn failed: our own checks, the store (disk full, server gone) or the model.

    ``where`` names the store (its SQLite path or name); ``store_url``'s password and ``secrets``
    (such as the API key) never appear in the line, even when a server echoed them.
    """
    cause = failure.cause
    if isinstance(cause, MultiSessionsError):
        return scrub(str(cause), store_url)
    if isinstance(cause, sqlite3.Error) or (isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS):
        return describe_sqlite_failure(cause, str(where))
    if isinstance(cause, driver_errors()):
        text = str(cause).strip()
        reason = scrub(text.splitlines()[0], store_url) if text else ""
        return f"{where}: the store failed ({type(cause).__name__}{': ' + reason if reason else ''})"
    return scrub(describe_failure(cause, secrets), store_url)


# A full disk, a read-only file system, no permission: the store's failure, not the model's.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})


async def _refuse_if_waiting(session: Session, store: SessionStore | None, start: TurnStart | None) -> None:
    if start is not None:
        waiting = start.paused
    else:
        waiting = store is not None and await store.load_pending(session.session_id) is not None
    if waiting:
        raise AwaitingApproval(
            f"session {session.session_id!r} waits for a supervisor to approve or reject a tool call; "
            "see: python agent.py approvals list"
        )


async def _finish(
    agent: Agent[Any],
    session: Session,
    store: SessionStore | None,
    turn: PendingTurn,
    result: RunResult | RunResultStreaming,
    lease: Lease,
    io: TurnIO | None,
    *,
    decided: bool = False,
) -> None:
    """Write everything the turn changed in one write: its items and the agent that answered;
    if it paused for approval, the paused turn instead of the items; if it resumed a paused
    turn (``decided``), the consumption of that paused turn.

    Nothing is written unless the lease was held throughout: no other turn ran meanwhile."""
    lease.committing = True  # a newer message can no longer stop this turn: it is being saved
    if result.interruptions:
        if store is None:
            raise StoreError("a turn paused for approval needs a store to wait in (not an in-memory session)")
        paused = paused_turn(session.session_id, agent.name, result, turn.pending)  # RunState's start
        write = TurnWrite([], agent=result.last_agent.name, pending=paused.dumps(), memory=turn.memory_writes)
    else:
        write = TurnWrite(
            list(turn.pending),
            agent=result.last_agent.name if store is not None else None,
            pending=None if decided else KEEP,
            memory=turn.memory_writes,
            summary=turn.new_summary,
            title=turn.title or title_of(turn.pending),
        )
    if io is not None:
        # The store checks the lease, writes the whole turn and frees the session in one step.
        if lease.lost:
            raise lease.lost_error()
        try:
            written = await io.commit(session.session_id, lease.owner, write)
        except Exception as exc:
            if commit_outcome_unknown(exc):
                raise CommitUnconfirmed(session.session_id, exc) from exc
            raise
        if not written:
            raise lease.lost_error()
        lease.released = True
        turn.pending = []
        return
    # A session the store cannot write itself (another class): its own writes, in order.
    await lease.confirm()
    if write.items:
        turn.pending = write.items
        await turn.write_items()
    if store is not None:
        if write.agent is not None:
            await store.save_last_agent(session.session_id, write.agent)
        if write.changes_pending:
            await store.save_pending(session.session_id, write.pending)
        if write.memory and turn.scope is not None:
            await store.save_memory(turn.scope, write.memory)
        if write.summary is not None:
            await store.save_summary(session.session_id, write.summary)
    if write.items:
        await turn.compact_after_commit()  # a compacting session compacts what is now whole


def _passes_history(agent: Agent[Any], session: Session, runner_kwargs: dict[str, Any]) -> bool:
    """Whether the turn runs with its history passed by hand (direct.py); a session that takes
    the run context gets it only from the SDK, so its turns keep the SDK's session path."""
    return not _takes_the_run_context(session) and can_pass_history(agent, session, runner_kwargs)


async def _input_by_hand(
    agent: Agent[Any], turn: PendingTurn, user_input: str, limit: int | None, runner_kwargs: dict[str, Any]
) -> tuple[list[TResponseInputItem], list[TResponseInputItem]] | None:
    """The model's input and the turn's own input items, if the history is passed by hand; else None."""
    if not _passes_history(agent, turn.session, runner_kwargs):
        return None
    history = await turn.get_items(None if turn.window is not None else limit)  # summaries: all unfolded
    return model_input(history, user_input, limited=limit is not None)


def _grouped(session_id: str, runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``runner_kwargs`` with the run's trace grouped by ``session_id`` (the SDK's ``group_id``),
    when traces are kept (``observers.group_traces``); as given otherwise, at no cost."""
    if not observers.grouping:
        return runner_kwargs
    config = runner_kwargs.get("run_config") or RunConfig()
    if config.group_id is not None:  # the caller grouped it already
        return runner_kwargs
    return {**runner_kwargs, "run_config": dataclasses.replace(config, group_id=session_id)}


def _turn_io(session: Session, store: SessionStore | None) -> TurnIO | None:
    """The store's short turn path for ``session``, if it has one that serves it exactly."""
    return None if store is None else store.turn_io(session)


@asynccontextmanager
async def _turn_on(
    session: Session,
    store: SessionStore | None,
    io: TurnIO | None,
    limit: int | None = None,
    *,
    on_busy: OnBusy = DEFAULT_ON_BUSY,
    on_wait: Callable[[str], object] | None = None,
) -> AsyncIterator[Lease]:
    """``_held``, told to the observers (``observers.py``): how the turn ended and how long it
    took, how long it waited for a busy session, and the leases held."""
    watching = observers.observers
    if not watching:  # nobody watches: nothing more than holding the session
        async with _held(session, store, io, limit, on_busy=on_busy, on_wait=on_wait) as lease:
            yield lease
        return
    started = time.perf_counter()
    waiting_since = 0.0

    def noting(line: str) -> None:
        nonlocal waiting_since
        waiting_since = time.perf_counter()
        if on_wait is not None:
            on_wait(line)

    outcome: tuple[str, str | None] = ("ok", None)
    try:
        async with _held(session, store, io, limit, on_busy=on_busy, on_wait=noting) as lease:
            if waiting_since:
                waited = time.perf_counter() - waiting_since
                for observer in watching:
                    observer.turn_waited(waited)
            for observer in watching:
                observer.leases_changed(1)
            try:
                yield lease
            finally:
                for observer in watching:
                    observer.leases_changed(-1)
            if lease.left:
                outcome = ("left", None)
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        seconds = time.perf_counter() - started
        for observer in watching:
            observer.turn_ended(outcome[0], outcome[1], seconds)


@asynccontextmanager
async def _held(
    session: Session,
    store: SessionStore | None,
    io: TurnIO | None,
    limit: int | None = None,
    *,
    on_busy: OnBusy = DEFAULT_ON_BUSY,
    on_wait: Callable[[str], object] | None = None,
) -> AsyncIterator[Lease]:
    """Hold the session for one turn (here, and through ``store``'s leases in every process);
    a busy session (as ``on_busy`` says), or a store failing while the lease is taken, fails the
    turn (``TurnFailed``). With ``io``, taking the lease also reads the turn's start
    (``lease.start``: the newest ``limit`` items) in the same round trip."""
    check_on_busy(on_busy)  # a caller's mistake, raised as it is
    if io is not None:
        session_id = session.session_id

        async def begin(owner: str, seconds: float) -> TurnStart | None:
            return await io.begin(session_id, owner, seconds, limit)

        holding = hold_session(session_id, io, begin=begin, on_busy=on_busy, on_wait=on_wait)
    else:
        leases = None if store is None else store.leases
        holding = hold_session(session.session_id, leases, on_busy=on_busy, on_wait=on_wait)
    async with contextlib.AsyncExitStack() as held:
        try:
            lease = await held.enter_async_context(holding)
        except TurnFailed:  # stopped by a newer message while it waited
            raise
        except Exception as exc:  # busy, or the store failed while the lease was being taken
            raise TurnFailed(session.session_id, exc) from exc
        yield lease


@asynccontextmanager
async def stream_turn(
    starting_agent: Agent[Any],
    session: Session,
    user_input: str,
    *,
    summaries: Summaries | None = None,
    titles: Titles | None = None,
    on_busy: OnBusy = DEFAULT_ON_BUSY,
    on_wait: Callable[[str], object] | None = None,
    **runner_kwargs: Any,
) -> AsyncIterator[RunResultStreaming]:
    """One streamed turn, whole or not at all: ``async with stream_turn(...) as result:``.

    Yields the SDK's ``RunResultStreaming``; read ``result.stream_events()`` inside the block.
    As in ``run_turn``, the turn runs on the session's current agent. The session's lock is held
    for the whole stream, and the turn is committed in one write only when the stream was read
    to its end. An exception or cancellation (raised as ``TurnFailed`` or the cancellation), or
    leaving the block before the stream ends, leaves the session exactly as it was. ``on_busy`` and
    ``on_wait`` as for ``run_turn``.
    """
    user_input = check_message(user_input)
    runner_kwargs = _grouped(session.session_id, runner_kwargs)
    store = store_of(session)
    io = _turn_io(session, store)
    limit = summaries.window if summaries is not None else history_limit(session, runner_kwargs)
    async with _turn_on(session, store, io, limit, on_busy=on_busy, on_wait=on_wait) as lease:
        turn = PendingTurn(session, lease.start)
        try:
            agent = await _where_it_stands(turn, starting_agent, store, summaries)
            by_hand = await _input_by_hand(agent, turn, user_input, limit, runner_kwargs)  # as in run_turn
        except Exception as exc:
            raise TurnFailed(session.session_id, exc) from exc
        with _running(turn):  # the run's task is made here and keeps the turn as its context
            if by_hand is None:
                result = Runner.run_streamed(agent, user_input, session=turn, **runner_kwargs)
            else:
                result = Runner.run_streamed(agent, by_hand[0], **runner_kwargs)
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
            lease.left = True
            return
        try:
            if by_hand is not None:
                turn.pending = turn_items(by_hand[1], result)
            await _fold_if_due(turn, summaries, result, runner_kwargs)
            await _title_if_new(turn, titles, result, runner_kwargs)
            await _finish(agent, session, store, turn, result, lease, io)
        except Exception as exc:
            raise TurnFailed(session.session_id, exc, saved=_saved(exc)) from exc


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
