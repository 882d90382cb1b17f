"""Turns on a SQLite file in two steps, on one long-lived connection per file per process.

The SDK's ``SQLiteSession`` opens connections per object and thread and takes a process-wide
lock per file for every call; ``SQLitePool`` opens a session per operation. Both cost far more
than the SQL. Here one connection per file, on a thread of its own (so the event loop never
waits on SQLite's locks), serves every turn of every session on that file: a turn's start (take
the lease, see whether a turn waits for approval, read the history) is one call, its commit (the
items, as ``SQLiteSession.add_items`` writes them, and the lease given up) one transaction. The
tables are the SDK's own: ``SQLiteSession`` reads what is written here, and the other way round.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from agents import SQLiteSession

from multisessions.locks import LEASE_SECONDS
from multisessions.naming import memory_scope
from multisessions.stores.base import KEEP, Summary, TurnStart, TurnWrite
from multisessions.stores.leases import LEASES_TABLE, add_interrupt_column

PENDING_TABLE = "agent_session_pending"
LAST_AGENT_TABLE = "agent_session_last_agent"
EFFECTS_TABLE = "multisessions_effects"
MEMORY_TABLE = "multisessions_memory"
SUMMARIES_TABLE = "multisessions_summaries"
SESSIONS_TABLE = "agent_sessions"
MESSAGES_TABLE = "agent_messages"
CREATE_PENDING_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (session_id TEXT PRIMARY KEY, "
    "state TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)
"""Turns paused for approval, beside the SDK's tables (SQLiteStore and the turn path both make it)."""
CREATE_LAST_AGENT_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {LAST_AGENT_TABLE} (session_id TEXT PRIMARY KEY, "
    "agent_name TEXT NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)
"""Each session's current agent: the one that answered (or paused) its last turn."""
CREATE_EFFECTS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (effect_key TEXT PRIMARY KEY, "
    "value TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)
"""Side effects done once per key (a tool call's id): the ledger ``record_once`` writes."""
CREATE_MEMORY_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {MEMORY_TABLE} (scope TEXT NOT NULL, fact TEXT NOT NULL, "
    "value TEXT NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (scope, fact))"
)
"""What a user's conversations share: facts by (tenant and user) scope (``naming.memory_scope``)."""
CREATE_SUMMARIES_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {SUMMARIES_TABLE} (session_id TEXT PRIMARY KEY, summary TEXT NOT NULL, "
    "covered INTEGER NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
)
"""Each session's summary of its older items (the items themselves stay in the SDK's table)."""
UPSERT_SUMMARY = (
    f"INSERT INTO {SUMMARIES_TABLE} (session_id, summary, covered) VALUES (?, ?, ?) ON CONFLICT(session_id) "
    "DO UPDATE SET summary = excluded.summary, covered = excluded.covered, updated_at = CURRENT_TIMESTAMP"
)
CONVERSATIONS_TABLE = "multisessions_conversations"
CREATE_CONVERSATIONS_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {CONVERSATIONS_TABLE} (scope TEXT NOT NULL, session_id TEXT NOT NULL, "
    "title TEXT NOT NULL DEFAULT '', last_activity REAL NOT NULL, items INTEGER NOT NULL DEFAULT 0, "
    "tags TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (scope, session_id))"
)
"""Each user's conversations (``naming.memory_scope``), written in the turn's commit."""
CREATE_CONVERSATIONS_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {CONVERSATIONS_TABLE}_recent "
    f"ON {CONVERSATIONS_TABLE} (scope, last_activity, session_id)"
)
"""A page is a range of this index: its cost depends on neither other users nor its position."""
UPSERT_CONVERSATION = (
    f"INSERT INTO {CONVERSATIONS_TABLE} (scope, session_id, title, last_activity, items) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(scope, session_id) DO UPDATE SET "
    "title = CASE WHEN title = '' THEN excluded.title ELSE title END, "
    "last_activity = max(last_activity, excluded.last_activity), items = items + excluded.items"
)
UPSERT_MEMORY = (
    f"INSERT INTO {MEMORY_TABLE} (scope, fact, value) VALUES (?, ?, ?) ON CONFLICT(scope, fact) "
    "DO UPDATE SET value = excluded.value, updated_at = CURRENT_TIMESTAMP"
)

T = TypeVar("T")
_inherited: list[object] = []  # a parent's connections and threads, never used in this process


class SQLiteTurns:
    """Leases and whole turns on one SQLite file: one connection, one thread (``TurnIO``)."""

    def __init__(self, db_path: str | Path, seconds: float = LEASE_SECONDS) -> None:
        self.db_path = Path(db_path)
        self.seconds = seconds
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._quick: sqlite3.Connection | None = None
        """A connection used on the event loop's thread, never waiting (see ``begin``)."""
        self._quick_thread = 0
        self._queued: list[_Commit] = []
        self._queue_guard = threading.Lock()

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the file's connection, on its own thread (opened on first use)."""
        self._forget_if_forked()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-turns")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, work)

    def _forget_if_forked(self) -> None:
        # A forked child has neither the thread nor a safe copy of the connection: it opens its
        # own. The inherited ones are left alone (closing them could disturb the parent's).
        if self._pid != os.getpid():
            _inherited.append((self._conn, self._thread, self._quick))
            self._conn, self._thread, self._quick, self._pid = None, None, None, os.getpid()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return work(self._conn)

    def _connect(self) -> sqlite3.Connection:
        # The SDK's class creates its own tables (and turns WAL on) exactly as it wants them.
        SQLiteSession("__tables__", self.db_path).close()
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {LEASES_TABLE} "
            "(session_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL, interrupt TEXT)"
        )
        add_interrupt_column(conn)
        conn.execute(CREATE_PENDING_TABLE)
        conn.execute(CREATE_LAST_AGENT_TABLE)
        conn.execute(CREATE_MEMORY_TABLE)
        conn.execute(CREATE_SUMMARIES_TABLE)
        conn.execute(CREATE_CONVERSATIONS_TABLE)
        conn.execute(CREATE_CONVERSATIONS_INDEX)
        return conn

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        return await self._call(lambda conn: _take(conn, session_id, owner, seconds))

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        def renew(conn: sqlite3.Connection) -> bool:
            sql = f"UPDATE {LEASES_TABLE} SET expires = ? WHERE session_id = ? AND owner = ?"
            return conn.execute(sql, (time.time() + seconds, session_id, owner)).rowcount == 1

        return await self._call(renew)

    async def release(self, session_id: str, owner: str) -> None:
        sql = f"DELETE FROM {LEASES_TABLE} WHERE session_id = ? AND owner = ?"
        await self._call(lambda conn: conn.execute(sql, (session_id, owner)))

    async def request_interrupt(self, session_id: str) -> None:
        sql = f"UPDATE {LEASES_TABLE} SET interrupt = owner WHERE session_id = ? AND expires >= ?"
        await self._call(lambda conn: conn.execute(sql, (session_id, time.time())))

    async def interrupted(self, held: list[tuple[str, str]]) -> list[str]:
        """Read on the event loop's thread when SQLite can answer at once (a read in WAL mode
        almost always can): this runs every ``CHECK_SECONDS`` while turns run."""
        quick = self._quick_connection()
        if quick is not None:
            try:
                return _interrupted(quick, held)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
        return await self._call(lambda conn: _interrupted(conn, held))

    async def begin(self, session_id: str, owner: str, seconds: float, limit: int | None) -> TurnStart | None:
        """Take the lease and read the turn's start: on the event loop's thread when SQLite can do it
        at once (tens of microseconds, cheaper than a trip to the thread), else on the thread."""
        quick = self._quick_connection()
        taken: bool | None = None
        if quick is not None:
            try:
                taken = _take(quick, session_id, owner, seconds)
                if not taken:
                    return None
                return _start(quick, session_id, limit)
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise

        def begin(conn: sqlite3.Connection) -> TurnStart | None:
            if not taken and not _take(conn, session_id, owner, seconds):
                return None
            return _start(conn, session_id, limit)

        return await self._call(begin)

    def _quick_connection(self) -> sqlite3.Connection | None:
        """The event loop thread's connection: it never waits for a lock (another process's write
        makes it fail at once, and the call goes to the thread, which waits), and never fsyncs.

        A lease needs no durability: after a power loss it is gone, and a turn that held it can
        only fail to commit. Commits stay on the thread, with the SDK's durability (an fsync).
        """
        self._forget_if_forked()
        if self._conn is None:
            return None  # the thread opens the file first: the SDK's tables, WAL, ours
        if self._quick is None:
            quick = sqlite3.connect(self.db_path, timeout=0, isolation_level=None, check_same_thread=False)
            quick.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per commit, never corrupt
            quick.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints happen on the thread's commits
            self._quick, self._quick_thread = quick, threading.get_ident()
        return self._quick if threading.get_ident() == self._quick_thread else None

    async def commit(self, session_id: str, owner: str, write: TurnWrite) -> bool:
        """Write the turn (its items, current agent and paused-turn record) and free its lease, in
        one transaction with the other turns' commits queued meanwhile (group commit: one fsync
        and one trip to the thread for all of them).

        Each turn's part still writes only if that turn holds its lease; if the transaction
        fails (a full disk), every turn in it fails and none is written."""
        rows = [(session_id, json.dumps(item)) for item in write.items]  # as SQLiteSession does
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        with self._queue_guard:
            self._queued.append(
                _Commit(
                    session_id,
                    owner,
                    rows,
                    write.agent,
                    write.pending,
                    dict(write.memory),
                    write.summary,
                    write.title,
                    done,
                    loop,
                )
            )
        await self._call(self._write_queued)  # writes ours, unless an earlier call took it along
        return await done

    def _write_queued(self, conn: sqlite3.Connection) -> None:
        with self._queue_guard:
            batch, self._queued = self._queued, []
        if not batch:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            written = [_write_turn(conn, turn) for turn in batch]
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for turn in batch:
                turn.loop.call_soon_threadsafe(_settle, turn.done, None, exc)
            return
        for turn, ok in zip(batch, written, strict=True):
            turn.loop.call_soon_threadsafe(_settle, turn.done, ok, None)

    def close(self) -> None:
        """Close the connection and stop its thread (the next call opens them again)."""
        self._forget_if_forked()  # a parent's thread would never answer here
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.submit(self._close_connection).result()
            thread.shutdown()

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._quick is not None:
            self._quick.close()  # sqlite3 allows it from another thread when nothing else uses it
            self._quick = None


def _take(conn: sqlite3.Connection, session_id: str, owner: str, seconds: float) -> bool:
    """Take the lease if it is free or expired (one statement, so one atomic step)."""
    now = time.time()
    taken = conn.execute(
        f"INSERT INTO {LEASES_TABLE} (session_id, owner, expires) VALUES (?, ?, ?) "
        "ON CONFLICT(session_id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
        f"WHERE {LEASES_TABLE}.expires < ?",
        (session_id, owner, now + seconds, now),
    )
    return taken.rowcount == 1


def _interrupted(conn: sqlite3.Connection, held: list[tuple[str, str]]) -> list[str]:
    """The session ids among ``held`` whose lease, still theirs, is marked to stop."""
    owners = dict(held)
    asked = []
    ids = list(owners)
    for first in range(0, len(ids), 500):  # well under SQLite's limit on parameters
        chunk = ids[first : first + 500]
        rows = conn.execute(
            f"SELECT session_id, owner FROM {LEASES_TABLE} WHERE interrupt = owner "
            f"AND session_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        asked += [session_id for session_id, owner in rows if owners.get(session_id) == owner]
    return asked


@dataclass
class _Commit:
    """One turn's commit, waiting for the thread's next transaction."""

    session_id: str
    owner: str
    rows: list[tuple[str, str]]
    agent: str | None
    pending: Any
    memory: dict[str, str]
    summary: Summary | None
    title: str | None
    done: asyncio.Future[bool]
    loop: asyncio.AbstractEventLoop


def _write_turn(conn: sqlite3.Connection, turn: _Commit) -> bool:
    """One turn's part of a transaction: nothing unless it still holds its lease."""
    freed = conn.execute(
        f"DELETE FROM {LEASES_TABLE} WHERE session_id = ? AND owner = ?", (turn.session_id, turn.owner)
    )
    if freed.rowcount != 1:  # another turn took the session: write nothing
        return False
    if turn.rows:
        # What SQLiteSession.add_items writes, in the same order.
        conn.execute(f"INSERT OR IGNORE INTO {SESSIONS_TABLE} (session_id) VALUES (?)", (turn.session_id,))
        conn.executemany(f"INSERT INTO {MESSAGES_TABLE} (session_id, message_data) VALUES (?, ?)", turn.rows)
        conn.execute(
            f"UPDATE {SESSIONS_TABLE} SET updated_at = CURRENT_TIMESTAMP WHERE session_id = ?",
            (turn.session_id,),
        )
    if turn.agent is not None:
        conn.execute(
            f"INSERT INTO {LAST_AGENT_TABLE} (session_id, agent_name) VALUES (?, ?) "
            "ON CONFLICT(session_id) DO UPDATE SET agent_name = excluded.agent_name, "
            "updated_at = CURRENT_TIMESTAMP",
            (turn.session_id, turn.agent),
        )
    scope = memory_scope(turn.session_id)
    if turn.rows and scope is not None:
        conn.execute(
            UPSERT_CONVERSATION, (scope, turn.session_id, turn.title or "", time.time(), len(turn.rows))
        )
    if turn.memory and scope is not None:
        conn.executemany(UPSERT_MEMORY, [(scope, fact, value) for fact, value in turn.memory.items()])
    if turn.summary is not None:
        conn.execute(UPSERT_SUMMARY, (turn.session_id, turn.summary.text, turn.summary.covered))
    if turn.pending is not KEEP:
        conn.execute(f"DELETE FROM {PENDING_TABLE} WHERE session_id = ?", (turn.session_id,))
        if turn.pending is not None:
            conn.execute(
                f"INSERT INTO {PENDING_TABLE} (session_id, state) VALUES (?, ?)",
                (turn.session_id, turn.pending),
            )
    return True


def _settle(done: asyncio.Future[bool], ok: bool | None, exc: BaseException | None) -> None:
    if done.done():  # its turn was cancelled meanwhile
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(bool(ok))


def _start(conn: sqlite3.Connection, session_id: str, limit: int | None) -> TurnStart:
    """Read after the lease is ours: every turn committed before it freed the lease is there."""
    waiting = conn.execute(f"SELECT 1 FROM {PENDING_TABLE} WHERE session_id = ?", (session_id,))
    paused = waiting.fetchone() is not None
    row = conn.execute(f"SELECT agent_name FROM {LAST_AGENT_TABLE} WHERE session_id = ?", (session_id,))
    agent = row.fetchone()
    scope = memory_scope(session_id)
    memory: dict[str, str] = {}
    if scope is not None:
        facts = conn.execute(f"SELECT fact, value FROM {MEMORY_TABLE} WHERE scope = ?", (scope,))
        memory = {str(fact): str(value) for fact, value in facts.fetchall()}
    return TurnStart(
        _read_history(conn, session_id, limit), limit, paused, None if agent is None else agent[0], memory
    )


def _busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _read_history(conn: sqlite3.Connection, session_id: str, limit: int | None) -> list[Any]:
    """The newest ``limit`` items (all: None), oldest first, as ``SQLiteSession.get_items`` reads
    them: rows that are not JSON are skipped, and the window grows so they do not count."""
    if limit is None:
        sql = f"SELECT message_data FROM {MESSAGES_TABLE} WHERE session_id = ? ORDER BY id ASC"
        return _decode(conn.execute(sql, (session_id,)).fetchall())
    sql = f"SELECT message_data FROM {MESSAGES_TABLE} WHERE session_id = ? ORDER BY id DESC LIMIT ?"
    if limit <= 0:  # the SDK keeps SQLite's meaning of a non-positive LIMIT
        return _decode(conn.execute(sql, (session_id, limit)).fetchall()[::-1])
    window = limit
    while True:
        rows = conn.execute(sql, (session_id, window)).fetchall()
        items = _decode(rows[::-1])
        if len(items) >= limit:
            return items[-limit:]
        if len(rows) < window:
            return items
        window *= 2


def _decode(rows: list[Any]) -> list[Any]:
    items = []
    for (data,) in rows:
        try:
            items.append(json.loads(data))
        except (json.JSONDecodeError, TypeError):
            continue
    return items
