"""Store plumbing the lesson need not show: what sits beside a session, and checking a db path.

The SDK's sessions keep the conversation but not which agent answered last. After a handoff the
follow-up belongs to the specialist, so ``save_last_agent`` records that name beside the session
(in the same store) and ``load_last_agent`` reads it back, also from a new process.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from agents import SQLiteSession
from agents.memory import Session

LAST_AGENT_TABLE = "agent_session_last_agent"
SESSIONS_TABLE = "agent_sessions"
MESSAGES_TABLE = "agent_messages"


class StoreError(Exception):
    """A store cannot be used as asked; the message says what is wrong and what to do."""


def check_db_path(db_path: str | Path) -> Path:
    """Fail early, in one line, on a db path SQLite could not use (and never touch its data)."""
    path = Path(db_path).expanduser()
    if path.is_dir():
        raise StoreError(f"{path} is a directory; give a file path for the database (--db)")
    if not path.parent.is_dir():
        raise StoreError(f"folder {path.parent} does not exist; create it or choose another --db")
    if path.exists():
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{path} is not a usable SQLite database ({exc}); move it aside or choose another --db"
            ) from None
    return path


ALL_ITEMS = 2**31 - 1
"""A limit no session reaches: ``get_items(ALL_ITEMS)`` reads everything on every store,
whatever ``SessionSettings(limit=...)`` the session carries."""


async def read_all(session: Session) -> list[Any]:
    """Every item the store holds for the session, oldest first."""
    return await session.get_items(ALL_ITEMS)


def _sqlite_path(session: SQLiteSession) -> str:
    return str(session.db_path)


def _sqlite_connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {LAST_AGENT_TABLE} ("
        "session_id TEXT PRIMARY KEY, agent_name TEXT NOT NULL, "
        "updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )
    return conn


async def save_last_agent(session: Session, agent_name: str) -> None:
    """Record which agent answered the session's last turn, beside the session."""
    if isinstance(session, SQLiteSession) and str(session.db_path) != ":memory:":

        def write() -> None:
            with closing(_sqlite_connect(_sqlite_path(session))) as conn, conn:
                conn.execute(
                    f"INSERT INTO {LAST_AGENT_TABLE} (session_id, agent_name) VALUES (?, ?) "
                    "ON CONFLICT(session_id) DO UPDATE SET agent_name = excluded.agent_name, "
                    "updated_at = CURRENT_TIMESTAMP",
                    (session.session_id, agent_name),
                )

        await asyncio.to_thread(write)
        return
    _memory_last_agent[_key(session)] = agent_name


async def load_last_agent(session: Session) -> str | None:
    """The agent that answered the session's last turn, or None if none was recorded."""
    if isinstance(session, SQLiteSession) and str(session.db_path) != ":memory:":

        def read() -> str | None:
            with closing(_sqlite_connect(_sqlite_path(session))) as conn:
                row = conn.execute(
                    f"SELECT agent_name FROM {LAST_AGENT_TABLE} WHERE session_id = ?",
                    (session.session_id,),
                ).fetchone()
                return row[0] if row else None

        return await asyncio.to_thread(read)
    return _memory_last_agent.get(_key(session))


async def forget_session(session: Session) -> None:
    """Delete the session's history (through the SDK) and what we keep beside it."""
    await session.clear_session()
    if isinstance(session, SQLiteSession) and str(session.db_path) != ":memory:":

        def delete() -> None:
            with closing(_sqlite_connect(_sqlite_path(session))) as conn, conn:
                conn.execute(f"DELETE FROM {LAST_AGENT_TABLE} WHERE session_id = ?", (session.session_id,))

        await asyncio.to_thread(delete)
        return
    _memory_last_agent.pop(_key(session), None)


# Sessions kept in memory (":memory:" SQLite) keep their last agent in memory too.
_memory_last_agent: dict[tuple[int, str], str] = {}


def _key(session: Any) -> tuple[int, str]:
    return (id(session), session.session_id)
