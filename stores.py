"""Store plumbing the lesson need not show: the session inventory, and what sits beside a session.

A *store* is where sessions live. The SDK's session classes keep a conversation each, but the
SDK has no way to list sessions, delete a user's sessions, or expire idle ones, and it does not
remember which agent answered last. ``SQLiteStore`` adds those over the SDK's own tables
(``agent_sessions``, ``agent_messages``) plus one table of ours beside them
(``agent_session_last_agent``). Other stores (Redis, PostgreSQL) live in ``store_urls.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import weakref
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from agents import SQLiteSession
from agents.memory import Session

from naming import ParsedSessionId, parse_session_id
from offline_model import message_text

LAST_AGENT_TABLE = "agent_session_last_agent"
SESSIONS_TABLE = "agent_sessions"
MESSAGES_TABLE = "agent_messages"

ALL_ITEMS = 2**31 - 1
"""A limit no session reaches: ``get_items(ALL_ITEMS)`` reads everything on every store,
whatever ``SessionSettings(limit=...)`` the session carries."""


class StoreError(Exception):
    """A store cannot be used as asked; the message says what is wrong and what to do."""


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

    def open(self, session_id: str) -> Session: ...
    async def check(self) -> None: ...
    async def list_sessions(self) -> list[SessionInfo]: ...
    async def delete(self, session_id: str) -> int: ...
    async def load_last_agent(self, session_id: str) -> str | None: ...
    async def save_last_agent(self, session_id: str, agent_name: str) -> None: ...
    async def close(self) -> None: ...


async def read_all(session: Session) -> list[Any]:
    """Every item the store holds for the session, oldest first."""
    return await session.get_items(ALL_ITEMS)


async def close_session(session: Session) -> None:
    """Release a session's connections, whether its ``close`` is plain or async."""
    close = getattr(session, "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


def check_db_path(db_path: str | Path, *, must_exist: bool = False, writable: bool = True) -> Path:
    """Fail early, in one line, on a db path SQLite could not use (and never change its data)."""
    path = Path(db_path).expanduser()
    if path.is_dir():
        raise StoreError(f"{path} is a directory; give a file path for the database (--db)")
    if not path.parent.is_dir():
        raise StoreError(f"folder {path.parent} does not exist; create it or choose another --db")
    if must_exist and not path.exists():
        raise StoreError(f"no database at {path}; run the demos first: python agent.py --db {path}")
    if path.exists():
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path} is not a usable SQLite database ({exc}); move it aside or choose another --db"
            ) from None
        if writable:
            try:
                with open(path, "r+b"):  # opening for writing changes nothing
                    pass
            except OSError as exc:
                raise StoreError(
                    f"{path} is read-only ({exc.strerror}); check its permissions, or choose another --db"
                ) from None
    return path


def _timestamp(value: str | None) -> datetime | None:
    # SQLite's CURRENT_TIMESTAMP is UTC, "YYYY-MM-DD HH:MM:SS".
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None


class SQLiteStore:
    """The inventory over a SQLite file that ``SQLiteSession`` writes."""

    def __init__(self, db_path: str | Path, *, pool: SQLitePool | None = None) -> None:
        self.db_path = Path(db_path)
        self.pool = pool
        self.name = f"SQLite file {self.db_path}"

    def open(self, session_id: str) -> Session:
        """A plain ``SQLiteSession``, or a pooled one if the store has a pool."""
        if self.pool is not None:
            return self.pool.session(session_id)
        return SQLiteSession(session_id, self.db_path)

    async def check(self) -> None:
        check_db_path(self.db_path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {LAST_AGENT_TABLE} ("
            "session_id TEXT PRIMARY KEY, agent_name TEXT NOT NULL, "
            "updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
        return conn

    async def list_sessions(self) -> list[SessionInfo]:
        def query() -> list[SessionInfo]:
            with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if SESSIONS_TABLE not in tables:
                    return []
                rows = conn.execute(
                    f"SELECT s.session_id, s.created_at, s.updated_at, "
                    f"(SELECT count(*) FROM {MESSAGES_TABLE} m WHERE m.session_id = s.session_id) "
                    f"FROM {SESSIONS_TABLE} s"
                ).fetchall()
            return [SessionInfo(r[0], r[3], _timestamp(r[1]), _timestamp(r[2])) for r in rows]

        return await asyncio.to_thread(query)

    async def delete(self, session_id: str) -> int:
        """Remove the session through the SDK's ``clear_session``, and our row beside it."""

        def count_and_forget() -> int:
            with closing(self._connect()) as conn, conn:
                conn.execute(f"DELETE FROM {LAST_AGENT_TABLE} WHERE session_id = ?", (session_id,))
                return conn.execute(
                    f"SELECT count(*) FROM {MESSAGES_TABLE} WHERE session_id = ?", (session_id,)
                ).fetchone()[0]

        removed = await asyncio.to_thread(count_and_forget)
        session = SQLiteSession(session_id, self.db_path)
        try:
            await session.clear_session()
        finally:
            session.close()
        return removed

    async def load_last_agent(self, session_id: str) -> str | None:
        def read() -> str | None:
            with closing(self._connect()) as conn:
                row = conn.execute(
                    f"SELECT agent_name FROM {LAST_AGENT_TABLE} WHERE session_id = ?", (session_id,)
                ).fetchone()
                return row[0] if row else None

        return await asyncio.to_thread(read)

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        def write() -> None:
            with closing(self._connect()) as conn, conn:
                conn.execute(
                    f"INSERT INTO {LAST_AGENT_TABLE} (session_id, agent_name) VALUES (?, ?) "
                    "ON CONFLICT(session_id) DO UPDATE SET agent_name = excluded.agent_name, "
                    "updated_at = CURRENT_TIMESTAMP",
                    (session_id, agent_name),
                )

        await asyncio.to_thread(write)

    async def close(self) -> None:
        return None


class SQLitePool:
    """Many users on one SQLite file in bounded resources: the recommended pattern on one machine.

    A plain ``SQLiteSession`` keeps a connection per executor thread that touched it, for as long
    as it is open: 1,000 open sessions held about 11,700 file descriptors here. Sessions from a
    pool hold nothing between operations: each read or write opens a ``SQLiteSession`` (off the
    event loop), runs, and closes it, and at most ``max_open`` are open at once. The model call
    in between holds no connection, so slow model calls do not hold the pool up.
    """

    def __init__(self, db_path: str | Path, max_open: int = 8) -> None:
        self.db_path = Path(db_path)
        self._slots = asyncio.Semaphore(max_open)

    def session(self, session_id: str, session_settings: Any = None) -> PooledSession:
        """A session handle; it opens a connection only while it reads or writes."""
        return PooledSession(self, session_id, session_settings)

    async def run(self, session_id: str, settings: Any, operation: Any) -> Any:
        async with self._slots:
            # Opening and closing take the SDK's per-file lock: do it off the event loop, so a
            # write in progress (here or in another process) never freezes every other user.
            session = await asyncio.to_thread(
                SQLiteSession, session_id, self.db_path, session_settings=settings
            )
            try:
                return await operation(session)
            finally:
                await asyncio.to_thread(session.close)


class PooledSession:
    """A ``Session`` whose every operation is a short-lived ``SQLiteSession`` from its pool."""

    def __init__(self, pool: SQLitePool, session_id: str, session_settings: Any = None) -> None:
        self.pool = pool
        self.session_id = session_id
        self.session_settings = session_settings

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return await self.pool.run(self.session_id, self.session_settings, lambda s: s.get_items(limit))

    async def add_items(self, items: list[Any]) -> None:
        await self.pool.run(self.session_id, self.session_settings, lambda s: s.add_items(items))

    async def pop_item(self) -> Any:
        return await self.pool.run(self.session_id, self.session_settings, lambda s: s.pop_item())

    async def clear_session(self) -> None:
        await self.pool.run(self.session_id, self.session_settings, lambda s: s.clear_session())


class MemoryStore:
    """The store of one in-memory session (``SQLiteSession`` with ``:memory:``): it is its own file."""

    name = "memory"

    def __init__(self, session: SQLiteSession) -> None:
        self.session = session
        self.last_agent: str | None = None

    async def load_last_agent(self, session_id: str) -> str | None:
        return self.last_agent

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        self.last_agent = agent_name

    async def delete(self, session_id: str) -> int:
        removed = len(await read_all(self.session))
        await self.session.clear_session()
        self.last_agent = None
        return removed


# Gone with the session object, as its in-memory database is.
_memory_stores: weakref.WeakKeyDictionary[SQLiteSession, MemoryStore] = weakref.WeakKeyDictionary()


def store_for(session: Session) -> Any:
    """The store a session object lives in, for what the SDK does not keep (its last agent)."""
    if isinstance(session, PooledSession):
        return SQLiteStore(session.pool.db_path)
    if isinstance(session, SQLiteSession):
        if str(session.db_path) == ":memory:":
            return _memory_stores.setdefault(session, MemoryStore(session))
        return SQLiteStore(session.db_path)
    from store_urls import store_of_session

    return store_of_session(session)


async def save_last_agent(session: Session, agent_name: str) -> None:
    """Record which agent answered the session's last turn, beside the session."""
    await store_for(session).save_last_agent(session.session_id, agent_name)


async def load_last_agent(session: Session) -> str | None:
    """The agent that answered the session's last turn, or None if none was recorded."""
    return await store_for(session).load_last_agent(session.session_id)


async def forget_session(session: Session) -> None:
    """Delete the session's history (through the SDK) and what we keep beside it."""
    await store_for(session).delete(session.session_id)


# --- The inventory, over any store --------------------------------------------------------


async def list_sessions(
    store: SessionStore, *, user: str | None = None, prefix: str | None = None
) -> list[SessionInfo]:
    """Sessions in the store, most recently active first, optionally one user's or by id prefix."""
    rows = await store.list_sessions()
    if user is not None:
        rows = [r for r in rows if r.parsed.user == user]
    if prefix is not None:
        rows = [r for r in rows if r.session_id.startswith(prefix)]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(rows, key=lambda r: (r.last_activity or oldest, r.session_id), reverse=True)


async def find_session(store: SessionStore, session_id: str) -> SessionInfo:
    """The inventory row of one session; ``StoreError`` if the store has no such session."""
    for row in await store.list_sessions():
        if row.session_id == session_id:
            return row
    raise StoreError(f"no session {session_id!r} in {store.name}; see: python agent.py sessions list")


async def delete_user_sessions(store: SessionStore, user: str, *, dry_run: bool = False) -> list[SessionInfo]:
    """Delete every session whose id names ``user`` (user, feature and dated ids)."""
    rows = await list_sessions(store, user=user)
    if not dry_run:
        for row in rows:
            await store.delete(row.session_id)
    return rows


async def expire_sessions(
    store: SessionStore, older_than_days: float, *, now: datetime | None = None, dry_run: bool = False
) -> list[SessionInfo]:
    """Delete sessions idle for longer than ``older_than_days``; returns what was (or would be) removed."""
    if older_than_days < 0:
        raise StoreError("--older-than must be zero or more days")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    stale = [r for r in await store.list_sessions() if r.last_activity and r.last_activity < cutoff]
    if not dry_run:
        for row in stale:
            await store.delete(row.session_id)
    return stale


def format_listing(rows: list[SessionInfo]) -> list[str]:
    """The inventory as aligned text lines, one per session, ids first so they can be copied."""

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"

    lines = [
        f"{'SESSION ID':<32} {'KIND':<8} {'ITEMS':>5}  {'CREATED (UTC)':<19}  {'LAST ACTIVITY':<19}  PARTS"
    ]
    for r in rows:
        p = r.parsed
        parts = ", ".join(f"{k}={v}" for k, v in vars(p).items() if k != "kind" and v is not None)
        times = f"{when(r.created):<19}  {when(r.last_activity):<19}"
        lines.append(f"{r.session_id:<32} {p.kind:<8} {r.items:>5}  {times}  {parts}")
    return lines


def history_lines(items: list[dict[str, Any]]) -> list[str]:
    """A session's history, one line per item: role and text; tool calls and handoffs in one line.

    Stored items do not say which agent wrote them; after a handoff, the agent is known from the
    handoff's output, so assistant lines carry its name from then on.
    """
    lines, agent = [], None
    for item in items:
        line = item_summary(item)
        if item.get("type") == "function_call_output" and "assistant" in str(item.get("output")):
            try:
                agent = json.loads(item["output"]).get("assistant", agent)
            except (ValueError, AttributeError):
                pass
        if item.get("role") == "assistant" and agent:
            line = line.replace("assistant:", f"assistant ({agent}):", 1)
        lines.append(line)
    return lines


def item_summary(item: dict[str, Any]) -> str:
    """One line for a stored item: role and text, or the tool call / handoff it records."""
    kind = item.get("type")
    if item.get("role") in ("user", "assistant", "system", "developer"):
        return f"{item['role']}: {message_text(item)}"
    if kind == "function_call":
        name = str(item.get("name", ""))
        if name.startswith("transfer_to_"):
            return f"handoff: {name}"
        return f"tool call: {name}({item.get('arguments', '')})"
    if kind == "function_call_output":
        return f"tool output: {str(item.get('output', ''))[:80]}"
    return f"{kind or 'item'}"
