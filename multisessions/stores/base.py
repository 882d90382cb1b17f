"""What every store offers beyond the SDK's sessions: an inventory, and the last agent beside each.

A *store* is where sessions live. The SDK's session classes keep one conversation each, but
cannot list sessions, delete one with what sits beside it, or remember which agent answered
last. Each store (SQLite file, Redis, PostgreSQL) implements ``SessionStore`` for that.
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from agents.memory import Session

from multisessions.locks import LeaseBackend
from multisessions.naming import ParsedSessionId, parse_session_id


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


class SessionStore(Protocol):
    """What the inventory, the chat and the demos need from any store."""

    name: str

    def open(self, session_id: str) -> Session:
        """The SDK session for ``session_id`` in this store."""
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

    async def close(self) -> None:
        """Release the store's clients and pools."""
        ...


S = TypeVar("S")

# Which store's leases guard a session: noted by the store that opened it, gone with the session.
_leases: weakref.WeakKeyDictionary[Any, LeaseBackend] = weakref.WeakKeyDictionary()


def remember_leases(session: S, leases: LeaseBackend) -> S:
    """Note that turns on ``session`` take their cross-process lease from ``leases``."""
    _leases[session] = leases
    return session


def noted_leases(session: Any) -> LeaseBackend | None:
    """The leases noted for ``session`` by the store that opened it, if any."""
    return _leases.get(session)


async def close_session(session: Session) -> None:
    """Release a session's connections, whether its ``close`` is plain or async."""
    close = getattr(session, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result
