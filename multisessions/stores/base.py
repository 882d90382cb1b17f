"""What every store offers beyond the SDK's sessions: an inventory, and the last agent beside each.

A *store* is where sessions live. The SDK's session classes keep one conversation each, but
cannot list sessions, delete one with what sits beside it, or remember which agent answered
last. Each store (SQLite file, Redis, PostgreSQL) implements ``SessionStore`` for that.
"""

from __future__ import annotations

import inspect
import json
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from agents.memory import Session

from multisessions.errors import MultiSessionsError, StoreError
from multisessions.locks import LeaseBackend
from multisessions.naming import ParsedSessionId, parse_session_id
from multisessions.stores.urls import scrub


@dataclass(frozen=True)
class SessionInfo:
    """One row of the inventory."""

    session_id: str
    items: int
    created: datetime | None
    last_activity: datetime | None

    @property
    def parsed(self) -> ParsedSessionId:
        return parse_session_id(self.session_id)


@dataclass(frozen=True)
class ConversationRow:
    """One conversation in its user's index (``conversations.list_conversations`` reads them)."""

    session_id: str
    title: str
    last_activity: float
    """Seconds since the epoch of its last committed turn."""
    items: int
    tags: dict[str, str] = field(default_factory=dict)


def tags_from_json(text: str) -> dict[str, str]:
    """A conversation's tags as stored (a JSON object); {} for anything else."""
    try:
        tags = json.loads(text)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {}


@dataclass(frozen=True)
class TurnStart:
    """What a store read while a turn took the session's lease: where the turn starts from."""

    history: list[Any]
    """The newest ``limit`` stored items, oldest first (all of them when ``limit`` is None)."""
    limit: int | None
    paused: bool
    """Whether a turn on this session waits for approval (then no new turn may run)."""
    agent: str | None = None
    """The session's current agent: the one that answered (or paused) its last turn."""
    memory: dict[str, str] = field(default_factory=dict)
    """The facts remembered for the session's user (``memory.memory_scope``), by name."""


class _Keep:
    """The paused-turn record stays as it is (``TurnWrite.pending``)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class TurnWrite:
    """Everything one turn changes, written together or not at all.

    ``items`` are appended to the history; ``agent`` becomes the session's current agent (None:
    unchanged); ``pending`` is the paused-turn record: ``KEEP`` leaves it, ``None`` consumes it,
    text replaces it; ``memory`` is written to the session's user's memory."""

    items: list[Any]
    agent: str | None = None
    pending: Any = KEEP
    memory: dict[str, str] = field(default_factory=dict)
    """Facts to remember for the session's user (new or replacing a fact of the same name)."""
    summary: Summary | None = None
    """A new summary of the session's older items (None: unchanged)."""
    title: str | None = None
    """The conversation's title if it has none yet (its first message; an existing one is kept)."""

    @property
    def changes_pending(self) -> bool:
        return self.pending is not KEEP


@dataclass(frozen=True)
class Summary:
    """What the session's first ``covered`` items said, folded into ``text`` (the items stay stored)."""

    text: str
    covered: int


class TurnIO(LeaseBackend, Protocol):
    """A store's short path for a whole turn on one of its plain sessions: a round trip to start,
    one to commit. It writes exactly what the SDK's session class would, in the same tables or keys."""

    async def begin(self, session_id: str, owner: str, seconds: float, limit: int | None) -> TurnStart | None:
        """Take the lease and read the turn's start in one step; ``None`` if another holder has it."""
        ...

    async def commit(self, session_id: str, owner: str, write: TurnWrite) -> bool:
        """If ``owner`` still holds the lease: apply ``write`` (items, current agent, paused turn)
        and give the lease up, in one atomic write, and return True. Otherwise write nothing and
        return False."""
        ...


class SessionStore(Protocol):
    """What the inventory, the chat and the demos need from any store."""

    name: str

    @property
    def leases(self) -> LeaseBackend:
        """Where turns on this store's sessions take their cross-process lease."""
        ...

    def open(self, session_id: str) -> Session:
        """The SDK session for ``session_id`` in this store."""
        ...

    def turn_io(self, session: Session) -> TurnIO | None:
        """The short turn path for ``session``, if this store can serve it exactly (its own
        plain session class, default tables); None: turns use the session and the leases."""
        ...

    async def check(self) -> None:
        """Raise ``StoreError`` (one line) if the store cannot be used."""
        ...

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session in the store, in no particular order."""
        ...

    async def delete(self, session_id: str) -> int:
        """Remove the session and what is kept beside it; returns how many items it held."""
        ...

    async def load_last_agent(self, session_id: str) -> str | None:
        """The name of the agent that answered the session's last turn, if recorded."""
        ...

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        """Record which agent answered the session's last turn."""
        ...

    async def save_pending(self, session_id: str, state: str | None) -> None:
        """Keep a turn paused for approval beside the session (``None`` drops it)."""
        ...

    async def load_pending(self, session_id: str) -> str | None:
        """The turn paused for approval on this session, if any."""
        ...

    async def list_pending(self) -> list[str]:
        """The ids of sessions with a turn paused for approval."""
        ...

    async def record_once(self, key: str, value: str) -> tuple[str, bool]:
        """Record ``value`` under ``key`` unless something is recorded there already; returns what
        is recorded and whether this call recorded it (a side effect keyed by a tool call's id)."""
        ...

    async def list_effects(self, prefix: str = "") -> dict[str, str]:
        """What ``record_once`` recorded, by key (those starting with ``prefix``)."""
        ...

    async def forget_effects(self, prefix: str) -> int:
        """Remove what ``record_once`` recorded under keys starting with ``prefix``; returns how many."""
        ...

    async def effect_keys(self, prefix: str = "") -> list[str]:
        """The keys ``record_once`` recorded under (those starting with ``prefix``), without values."""
        ...

    async def load_memory(self, scope: str) -> dict[str, str]:
        """The facts remembered for ``scope`` (a tenant and user: ``naming.user_scope``), by name."""
        ...

    async def summary_state(self, session_id: str) -> tuple[Summary | None, int]:
        """The session's summary, if any, and how many items it holds (one read)."""
        ...

    async def save_summary(self, session_id: str, summary: Summary) -> None:
        """Keep a summary outside a turn (turns write theirs in their own write)."""
        ...

    async def save_memory(self, scope: str, facts: dict[str, str]) -> None:
        """Write ``facts`` to ``scope``'s memory outside a turn (turns write theirs in their own write)."""
        ...

    async def forget_memory(self, scope: str) -> int:
        """Remove everything remembered for ``scope``; returns how many facts."""
        ...

    async def memory_scopes(self) -> dict[str, int]:
        """Every scope with remembered facts, and how many."""
        ...

    async def close(self) -> None:
        """Release the store's clients and pools."""
        ...


S = TypeVar("S")

# Which store opened a session (for its leases and paused turns): noted by the store itself,
# gone with the session object.
_stores: weakref.WeakKeyDictionary[Any, SessionStore] = weakref.WeakKeyDictionary()


def remember_store(session: S, store: SessionStore) -> S:
    """Note that ``session`` lives in ``store``."""
    _stores[session] = store
    return session


def noted_store(session: Any) -> SessionStore | None:
    """The store that opened ``session``, if one noted it."""
    return _stores.get(session)


async def close_session(session: Session) -> None:
    """Release a session's connections, whether its ``close`` is plain or async."""
    close = getattr(session, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


@contextmanager
def store_failures(name: str, url: str | None, doing: str) -> Iterator[None]:
    """Turn a driver's exception into one ``StoreError`` line, with the URL's secrets scrubbed.

    The driver's text can hold the URL (and so the password): it is scrubbed, and only its
    first line is kept.
    """
    try:
        yield
    except MultiSessionsError:
        raise
    except Exception as exc:
        reason = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
        raise StoreError(f"{name} failed while {doing} ({detail}); is the server running?") from None
