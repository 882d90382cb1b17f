"""Sessions in a SQLite file: the SDK's ``SQLiteSession``, its tables, and one table of ours.

``SQLiteStore`` adds the inventory over the SDK's own tables (``agent_sessions``,
``agent_messages``) plus ``agent_session_last_agent`` beside them. ``SQLitePool`` serves many
users from one file in bounded resources.
"""

from __future__ import annotations

import asyncio
import errno
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agents import SQLiteSession
from agents.memory import Session, SessionSettings

from multisessions.errors import StoreError
from multisessions.naming import memory_scope
from multisessions.stores.base import ConversationRow, SessionInfo, Summary, TurnIO, tags_from_json
from multisessions.stores.sqlite_turns import (
    CONVERSATIONS_TABLE,
    CREATE_CONVERSATIONS_INDEX,
    CREATE_CONVERSATIONS_TABLE,
    CREATE_EFFECTS_TABLE,
    CREATE_LAST_AGENT_TABLE,
    CREATE_MEMORY_TABLE,
    CREATE_PENDING_TABLE,
    CREATE_SUMMARIES_TABLE,
    EFFECTS_TABLE,
    LAST_AGENT_TABLE,
    MEMORY_TABLE,
    MESSAGES_TABLE,
    PENDING_TABLE,
    SESSIONS_TABLE,
    SUMMARIES_TABLE,
    UPSERT_MEMORY,
    UPSERT_SUMMARY,
    SQLiteTurns,
)


def read_only_uri(path: str | Path, *, immutable: bool = False) -> str:
    """A ``file:`` URI opening ``path`` read-only; ``?`` and ``#`` in the path are escaped.

    ``immutable`` also skips the WAL's shared-memory file, which a read-only folder or a full
    disk cannot create: the only way to read a healthy file there.
    """
    return f"file:{quote(str(Path(path).absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")


def connect_read_only(path: str | Path) -> sqlite3.Connection:
    """A read-only connection; on a read-only folder or full disk, an immutable one instead."""
    conn = None
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        if conn is not None:
            conn.close()
        if _environment_problem(exc) is None and "unable to open" not in str(exc):
            raise
        return sqlite3.connect(read_only_uri(path, immutable=True), uri=True)


def _environment_problem(exc: BaseException) -> str | None:
    """``"full"`` or ``"read-only"`` when ``exc`` is about the disk, not about the file's content."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "disk is full" in text or "no space left" in text:
        return "full"
    if code == errno.EROFS or "readonly" in text or "read-only" in text:
        return "read-only"
    return None


def describe_sqlite_failure(exc: BaseException, path: str | Path) -> str:
    """One true line for a SQLite or file error on ``path``: full disk, read-only, locked, corrupt."""
    problem = _environment_problem(exc)
    if problem == "full":
        return f"the disk holding {path} is full ({exc}); free some space and retry (nothing was written)"
    if problem == "read-only":
        return (
            f"{path} cannot be written: read-only file or filesystem ({exc}); "
            "reading works (sessions list/show), or choose another --db"
        )
    if "locked" in str(exc) or "busy" in str(exc):
        return f"{path} is locked by another process ({exc}); retry when it is done"
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return f"{path} is not a usable SQLite database ({exc}); move it aside or choose another --db"
    return f"the database {path} failed ({exc}); check the file and its folder"


def check_db_path(db_path: str | Path, *, must_exist: bool = False, writable: bool = True) -> Path:
    """Fail early, in one line, on a db path SQLite could not use (and never change its data)."""
    path = Path(db_path).expanduser()
    if path.is_dir():
        raise StoreError(f"{path} is a directory; give a file path for the database (--db)")
    if path.exists() and not path.is_file():  # a FIFO would block the first open for ever
        raise StoreError(
            f"{path} is not a regular file (a FIFO, socket or device); "
            "give a SQLite file for the database (--db)"
        )
    if not path.parent.is_dir():
        raise StoreError(f"folder {path.parent} does not exist; create it or choose another --db")
    if must_exist and not path.exists():
        raise StoreError(
            f"no database at {path}; give the file your sessions are in (--db PATH) or a store "
            "(--store URL), or run the demos first (python agent.py in the project folder)"
        )
    if path.exists():
        try:
            # Immutable when the plain read-only open fails: a healthy file on a read-only
            # folder or a full disk is still healthy, and is read, not called corrupt.
            with closing(connect_read_only(path)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(describe_sqlite_failure(exc, path)) from None
        if writable:
            try:
                with open(path, "r+b"):  # opening for writing changes nothing
                    pass
            except OSError as exc:
                if _environment_problem(exc):
                    raise StoreError(describe_sqlite_failure(exc, path)) from None
                raise StoreError(
                    f"{path} is read-only ({exc.strerror}); check its permissions, or choose another --db"
                ) from None
    return path


def _timestamp(value: str | None) -> datetime | None:
    # SQLite's CURRENT_TIMESTAMP is UTC, "YYYY-MM-DD HH:MM:SS".
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None


class ReadOnlySession:
    """A session's items read from the file without writing to it, for ``sessions show``.

    The SDK's ``SQLiteSession`` creates its tables when opened, so on a read-only file or folder
    it cannot even read; this one only reads (an immutable connection where it must)."""

    session_settings: SessionSettings | None = None

    def __init__(self, session_id: str, db_path: Path) -> None:
        self.session_id = session_id
        self.db_path = db_path

    async def get_items(self, limit: int | None = None) -> list[Any]:
        def read() -> list[Any]:
            if not self.db_path.exists():
                return []
            with closing(connect_read_only(self.db_path)) as conn:
                if not _has_table(conn, MESSAGES_TABLE):
                    return []
                query = f"SELECT message_data FROM {MESSAGES_TABLE} WHERE session_id = ? ORDER BY id"
                rows = conn.execute(query, (self.session_id,)).fetchall()
            items = []
            for (data,) in rows:
                try:
                    items.append(json.loads(data))
                except (ValueError, TypeError):  # skipped, as the SDK's own reader does
                    continue
            return items[-limit:] if limit is not None and limit > 0 else items

        return await asyncio.to_thread(read)

    async def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreError(f"session {self.session_id!r} was opened for reading only")

    add_items = pop_item = clear_session = _refuse


class SQLiteStore:
    """Sessions in one SQLite file, as the SDK's ``SQLiteSession`` writes them."""

    def __init__(self, db_path: str | Path, *, pool: SQLitePool | None = None) -> None:
        self.db_path = Path(db_path)
        self.pool = pool
        self.name = f"SQLite file {self.db_path}"

    @property
    def leases(self) -> SQLiteTurns:
        """Leases in this file, shared by every store and session on it in this process."""
        return sqlite_turns(self.db_path)

    def open(self, session_id: str) -> Session:
        """A plain ``SQLiteSession``, or a pooled one if the store has a pool."""
        if self.pool is not None:
            return self.pool.session(session_id)
        return SQLiteSession(session_id, self.db_path)

    def open_read_only(self, session_id: str) -> Session:
        """The session for reading only: works on a read-only file or folder, never writes."""
        return ReadOnlySession(session_id, self.db_path)

    def turn_io(self, session: Session) -> TurnIO | None:
        """This file's short turn path, for a plain ``SQLiteSession`` on it with the SDK's default
        tables, or a pooled session; a subclass (``AdvancedSQLiteSession`` writes more tables)
        goes through its own methods."""
        if type(session) is PooledSession:
            path = session.pool.db_path
        elif type(session) is SQLiteSession:
            if (session.sessions_table, session.messages_table) != (SESSIONS_TABLE, MESSAGES_TABLE):
                return None
            path = Path(session.db_path)
        else:
            return None
        if str(path) == ":memory:" or path.absolute() != self.db_path.absolute():
            return None
        return sqlite_turns(path)

    async def check(self) -> None:
        check_db_path(self.db_path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.execute(CREATE_LAST_AGENT_TABLE)
        conn.execute(CREATE_PENDING_TABLE)
        conn.execute(CREATE_MEMORY_TABLE)
        conn.execute(CREATE_SUMMARIES_TABLE)
        conn.execute(CREATE_CONVERSATIONS_TABLE)
        conn.execute(CREATE_CONVERSATIONS_INDEX)
        return conn

    async def conversation_page(
        self, scope: str, limit: int, after: tuple[float, str] | None = None
    ) -> list[ConversationRow]:
        """Up to ``limit`` of ``scope``'s conversations, newest activity first, after ``after``
        (the last row of the previous page): one range of the (scope, last_activity) index."""

        def read() -> list[ConversationRow]:
            if not self.db_path.exists():
                return []
            with closing(connect_read_only(self.db_path)) as conn:
                if not _has_table(conn, CONVERSATIONS_TABLE):
                    return []
                sql = (
                    f"SELECT session_id, title, last_activity, items, tags FROM {CONVERSATIONS_TABLE} "
                    "WHERE scope = ?"
                )
                args: list[Any] = [scope]
                if after is not None:
                    sql += " AND last_activity <= ? AND (last_activity < ? OR session_id < ?)"
                    args += [after[0], after[0], after[1]]
                sql += " ORDER BY last_activity DESC, session_id DESC LIMIT ?"
                rows = conn.execute(sql, [*args, limit]).fetchall()
            return [ConversationRow(r[0], r[1], float(r[2]), int(r[3]), tags_from_json(r[4])) for r in rows]

        return await asyncio.to_thread(read)

    async def set_conversation_tags(self, scope: str, session_id: str, tags: dict[str, str]) -> bool:
        """Replace the conversation's tags; False if ``scope`` has no such conversation."""

        def write() -> bool:
            with closing(self._connect()) as conn, conn:
                sql = f"UPDATE {CONVERSATIONS_TABLE} SET tags = ? WHERE scope = ? AND session_id = ?"
                return conn.execute(sql, (json.dumps(tags), scope, session_id)).rowcount == 1

        return await asyncio.to_thread(write)

    async def index_conversation(self, scope: str, row: ConversationRow) -> bool:
        """Add a conversation written before the index existed (kept as is if already there)."""

        def write() -> bool:
            with closing(self._connect()) as conn, conn:
                added = conn.execute(
                    f"INSERT OR IGNORE INTO {CONVERSATIONS_TABLE} "
                    "(scope, session_id, title, last_activity, items) VALUES (?, ?, ?, ?, ?)",
                    (scope, row.session_id, row.title, row.last_activity, row.items),
                )
                return added.rowcount == 1

        return await asyncio.to_thread(write)

    async def list_sessions(self) -> list[SessionInfo]:
        def query() -> list[SessionInfo]:
            if not self.db_path.exists():
                return []  # a file no turn has written yet holds no session
            with closing(connect_read_only(self.db_path)) as conn:
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
                conn.execute(f"DELETE FROM {PENDING_TABLE} WHERE session_id = ?", (session_id,))
                conn.execute(f"DELETE FROM {SUMMARIES_TABLE} WHERE session_id = ?", (session_id,))
                conn.execute(
                    f"DELETE FROM {CONVERSATIONS_TABLE} WHERE scope = ? AND session_id = ?",
                    (memory_scope(session_id) or "", session_id),
                )
                return (
                    int(
                        conn.execute(
                            f"SELECT count(*) FROM {MESSAGES_TABLE} WHERE session_id = ?", (session_id,)
                        ).fetchone()[0]
                    )
                    if _has_table(conn, MESSAGES_TABLE)
                    else 0
                )

        removed = await asyncio.to_thread(count_and_forget)
        session = SQLiteSession(session_id, self.db_path)
        try:
            await session.clear_session()
        finally:
            session.close()
        return removed

    async def load_last_agent(self, session_id: str) -> str | None:
        def read() -> str | None:
            if not self.db_path.exists():
                return None
            with closing(connect_read_only(self.db_path)) as conn:  # reading never writes
                if not _has_table(conn, LAST_AGENT_TABLE):
                    return None
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

    async def save_pending(self, session_id: str, state: str | None) -> None:
        def write() -> None:
            with closing(self._connect()) as conn, conn:
                conn.execute(f"DELETE FROM {PENDING_TABLE} WHERE session_id = ?", (session_id,))
                conn.execute(f"DELETE FROM {SUMMARIES_TABLE} WHERE session_id = ?", (session_id,))
                if state is not None:
                    conn.execute(
                        f"INSERT INTO {PENDING_TABLE} (session_id, state) VALUES (?, ?)", (session_id, state)
                    )

        await asyncio.to_thread(write)

    async def load_pending(self, session_id: str) -> str | None:
        def read() -> str | None:
            with closing(self._connect()) as conn:
                row = conn.execute(
                    f"SELECT state FROM {PENDING_TABLE} WHERE session_id = ?", (session_id,)
                ).fetchone()
                return None if row is None else str(row[0])

        return await asyncio.to_thread(read)

    async def list_pending(self) -> list[str]:
        def read() -> list[str]:
            with closing(self._connect()) as conn:
                return [str(r[0]) for r in conn.execute(f"SELECT session_id FROM {PENDING_TABLE}")]

        return await asyncio.to_thread(read)

    async def record_once(self, key: str, value: str) -> tuple[str, bool]:
        """Record ``value`` under ``key`` unless something is recorded there already.

        Returns what is recorded and whether this call recorded it: a side effect keyed by a
        tool call's id happens once, however often its turn is run again."""

        def write() -> tuple[str, bool]:
            with closing(self._connect()) as conn, conn:
                conn.execute(CREATE_EFFECTS_TABLE)
                added = conn.execute(
                    f"INSERT OR IGNORE INTO {EFFECTS_TABLE} (effect_key, value) VALUES (?, ?)", (key, value)
                ).rowcount
                row = conn.execute(
                    f"SELECT value FROM {EFFECTS_TABLE} WHERE effect_key = ?", (key,)
                ).fetchone()
                return str(row[0]), added == 1

        return await asyncio.to_thread(write)

    async def list_effects(self, prefix: str = "") -> dict[str, str]:
        """What ``record_once`` recorded, by key (those starting with ``prefix``)."""

        def read() -> dict[str, str]:
            if not self.db_path.exists():
                return {}
            with closing(connect_read_only(self.db_path)) as conn:
                if not _has_table(conn, EFFECTS_TABLE):
                    return {}
                rows = conn.execute(
                    f"SELECT effect_key, value FROM {EFFECTS_TABLE} WHERE substr(effect_key, 1, ?) = ? "
                    "ORDER BY created_at, effect_key",
                    (len(prefix), prefix),
                ).fetchall()
                return {str(k): str(v) for k, v in rows}

        return await asyncio.to_thread(read)

    async def effect_keys(self, prefix: str = "") -> list[str]:
        """The keys ``record_once`` recorded under (those starting with ``prefix``)."""
        return list(await self.list_effects(prefix))

    async def forget_effects(self, prefix: str) -> int:
        """Remove what ``record_once`` recorded under keys starting with ``prefix``; returns how many."""

        def delete() -> int:
            if not self.db_path.exists():
                return 0
            with closing(self._connect()) as conn, conn:
                conn.execute(CREATE_EFFECTS_TABLE)
                return int(
                    conn.execute(
                        f"DELETE FROM {EFFECTS_TABLE} WHERE substr(effect_key, 1, ?) = ?",
                        (len(prefix), prefix),
                    ).rowcount
                )

        return await asyncio.to_thread(delete)

    async def summary_state(self, session_id: str) -> tuple[Summary | None, int]:
        """The session's summary, if any, and how many items it holds."""

        def read() -> tuple[Summary | None, int]:
            if not self.db_path.exists():
                return None, 0
            with closing(connect_read_only(self.db_path)) as conn:
                summary = None
                if _has_table(conn, SUMMARIES_TABLE):
                    row = conn.execute(
                        f"SELECT summary, covered FROM {SUMMARIES_TABLE} WHERE session_id = ?", (session_id,)
                    ).fetchone()
                    summary = None if row is None else Summary(str(row[0]), int(row[1]))
                count = 0
                if _has_table(conn, MESSAGES_TABLE):
                    count = int(
                        conn.execute(
                            f"SELECT count(*) FROM {MESSAGES_TABLE} WHERE session_id = ?", (session_id,)
                        ).fetchone()[0]
                    )
                return summary, count

        return await asyncio.to_thread(read)

    async def save_summary(self, session_id: str, summary: Summary) -> None:
        """Keep ``summary`` for the session (outside a turn)."""

        def write() -> None:
            with closing(self._connect()) as conn, conn:
                conn.execute(UPSERT_SUMMARY, (session_id, summary.text, summary.covered))

        await asyncio.to_thread(write)

    async def load_memory(self, scope: str) -> dict[str, str]:
        """The facts remembered for ``scope`` (a tenant and user: ``naming.user_scope``), by name."""

        def read() -> dict[str, str]:
            if not self.db_path.exists():
                return {}
            with closing(connect_read_only(self.db_path)) as conn:
                if not _has_table(conn, MEMORY_TABLE):
                    return {}
                rows = conn.execute(
                    f"SELECT fact, value FROM {MEMORY_TABLE} WHERE scope = ? ORDER BY fact", (scope,)
                ).fetchall()
                return {str(fact): str(value) for fact, value in rows}

        return await asyncio.to_thread(read)

    async def save_memory(self, scope: str, facts: dict[str, str]) -> None:
        """Write ``facts`` to ``scope``'s memory (each replacing a fact of the same name)."""

        def write() -> None:
            with closing(self._connect()) as conn, conn:
                conn.executemany(UPSERT_MEMORY, [(scope, fact, value) for fact, value in facts.items()])

        await asyncio.to_thread(write)

    async def forget_memory(self, scope: str) -> int:
        """Remove everything remembered for ``scope``; returns how many facts."""

        def delete() -> int:
            if not self.db_path.exists():
                return 0
            with closing(self._connect()) as conn, conn:
                return int(conn.execute(f"DELETE FROM {MEMORY_TABLE} WHERE scope = ?", (scope,)).rowcount)

        return await asyncio.to_thread(delete)

    async def memory_scopes(self) -> dict[str, int]:
        """Every scope with remembered facts, and how many."""

        def read() -> dict[str, int]:
            if not self.db_path.exists():
                return {}
            with closing(connect_read_only(self.db_path)) as conn:
                if not _has_table(conn, MEMORY_TABLE):
                    return {}
                rows = conn.execute(f"SELECT scope, count(*) FROM {MEMORY_TABLE} GROUP BY scope").fetchall()
                return {str(scope): int(n) for scope, n in rows}

        return await asyncio.to_thread(read)

    async def close(self) -> None:
        """Close this process's lease connection to the file (the next turn opens it again).

        The last connection to close checkpoints SQLite's write-ahead log into the file, so a
        file copied after ``close()`` holds every committed turn.
        """
        turns = _turns_by_file.pop(self.db_path.absolute(), None)
        if turns is not None:
            turns.close()


_turns_by_file: OrderedDict[Path, SQLiteTurns] = OrderedDict()
_KEEP_FILES = 16  # connections kept open per process (the most recently used files)


def sqlite_turns(db_path: str | Path) -> SQLiteTurns:
    """The leases and turn path of one SQLite file: one connection per file per process."""
    path = Path(db_path).absolute()
    turns = _turns_by_file.pop(path, None) or SQLiteTurns(path)
    _turns_by_file[path] = turns
    while len(_turns_by_file) > _KEEP_FILES:
        _turns_by_file.popitem(last=False)[1].close()
    return turns


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone()
        is not None
    )


class SQLitePool:
    """Many users on one SQLite file in bounded resources: the recommended pattern on one machine.

    A plain ``SQLiteSession`` keeps a connection per executor thread that touched it, for as long
    as it is open: thousands of descriptors for a thousand open sessions. Sessions from a
    pool hold nothing between operations: each read or write opens a ``SQLiteSession`` (off the
    event loop), runs, and closes it, and at most ``max_open`` are open at once. The model call
    in between holds no connection, so slow model calls do not hold the pool up.
    """

    def __init__(self, db_path: str | Path, max_open: int = 8) -> None:
        self.db_path = Path(db_path)
        self._slots = asyncio.Semaphore(max_open)

    def session(self, session_id: str, session_settings: SessionSettings | None = None) -> PooledSession:
        """A session handle; it opens a connection only while it reads or writes."""
        return PooledSession(self, session_id, session_settings)

    async def run(
        self,
        session_id: str,
        settings: SessionSettings | None,
        operation: Callable[[SQLiteSession], Awaitable[Any]],
    ) -> Any:
        """Run ``operation`` on a ``SQLiteSession`` opened for just this call."""
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

    def __init__(
        self, pool: SQLitePool, session_id: str, session_settings: SessionSettings | None = None
    ) -> None:
        self.pool = pool
        self.session_id = session_id
        self.session_settings = session_settings

    async def get_items(self, limit: int | None = None) -> list[Any]:
        items: list[Any] = await self.pool.run(
            self.session_id, self.session_settings, lambda s: s.get_items(limit)
        )
        return items

    async def add_items(self, items: list[Any]) -> None:
        await self.pool.run(self.session_id, self.session_settings, lambda s: s.add_items(items))

    async def pop_item(self) -> Any:
        return await self.pool.run(self.session_id, self.session_settings, lambda s: s.pop_item())

    async def clear_session(self) -> None:
        await self.pool.run(self.session_id, self.session_settings, lambda s: s.clear_session())
