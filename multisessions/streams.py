"""Turn logs: every event of a streamed turn, kept in the store so any worker can serve it again.

A turn started over HTTP runs in a task of its own and appends its events (``turn``, ``delta``,
``handoff``, then ``done`` or ``error``) to its log; a client reads the log, never the turn, so
it can leave and come back (``Last-Event-ID``) to any worker on the same store and get the
events it missed, then the rest, each once. Only the session's latest turn is kept, under the
session id (which the server derives from the caller's token): nobody can name another user's log.

Where a log lives: a Redis stream per turn (``XADD``, ``XREAD BLOCK``, expiring after
``KEEP_SECONDS``); a table in PostgreSQL or the SQLite file, read by short polling. Readers in the
turn's own process are woken at once. The running worker marks the log alive every
``HEARTBEAT_SECONDS``; a log that stops being marked before its turn ended (the worker died: its
session's lease expires and nothing of the turn was saved) ends, for every reader, with one
``error`` event saying so (``LOST``).
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from multisessions.locks import LEASE_SECONDS
from multisessions.stores import EncryptedStore, RedisStore, SessionStore, SQLiteStore, SQLStore
from multisessions.stores.leases import SETUP_LOCK, text

HEARTBEAT_SECONDS = 2.0
"""How often the worker running a turn marks its log alive."""
STALE_SECONDS = LEASE_SECONDS
"""A log not marked alive for this long, its turn unfinished, belongs to a worker that died: by
then the session's lease has expired too, so nothing of that turn is saved."""
KEEP_SECONDS = 24 * 3600
"""How long a Redis turn log is kept after its last event (SQL logs are replaced by the next turn)."""
POLL_SECONDS = 0.1
"""How often a reader in another process looks for new events in a SQL log."""
FINAL = ("done", "error")
LOST = {
    "detail": "the worker running this turn stopped before it ended; nothing of it was saved, "
    "send the message again",
    "status": 503,
}
TURN_ID = re.compile(r"[0-9a-f]{32}")
"""What ``new_turn_id`` makes: nothing else is looked up."""
EVENTS_TABLE = "multisessions_turn_events"
TURNS_TABLE = "multisessions_turn_logs"


@dataclass(frozen=True)
class Event:
    """One event of a turn's log; ``seq`` counts from 1 within the turn."""

    turn_id: str
    seq: int
    name: str
    data: dict[str, Any]

    @property
    def event_id(self) -> str:
        """The SSE ``id:``: which turn, and where in it (what ``Last-Event-ID`` sends back)."""
        return f"{self.turn_id}:{self.seq}"


def parse_event_id(value: str | None) -> tuple[str | None, int]:
    """``Last-Event-ID`` as (turn id, last seq seen); anything unusable reads as (None, 0)."""
    turn_id, _, seq = (value or "").strip().partition(":")
    if not TURN_ID.fullmatch(turn_id) or not seq.isdigit() or len(seq) > 9:
        return None, 0
    return turn_id, int(seq)


class LogBackend(Protocol):
    """Where a store keeps turn logs: a session's latest turn, its events, its heartbeat."""

    async def begin(self, session_id: str, turn_id: str) -> None: ...
    async def append(self, session_id: str, turn_id: str, seq: int, name: str, data: str) -> None: ...
    async def beat(self, session_id: str, turn_id: str) -> None: ...
    async def latest(self, session_id: str) -> str | None: ...
    async def beat_of(self, session_id: str, turn_id: str) -> float | None: ...
    async def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> list[tuple[int, str, str]]: ...
    async def forget(self, session_id: str) -> None: ...
    async def close(self) -> None: ...


class TurnLogs:
    """The turn logs of one store: write a running turn's events, read any turn's from a point."""

    def __init__(
        self,
        backend: LogBackend,
        *,
        seal: Callable[[str, str], str] | None = None,
        unseal: Callable[[str, str], str] | None = None,
        stale_after: float = STALE_SECONDS,
    ) -> None:
        self.backend = backend
        self._seal = seal  # an encrypted store's events are encrypted with the session's key
        self._unseal = unseal
        self.stale_after = stale_after
        self._wake: dict[str, asyncio.Event] = {}
        self._local: set[str] = set()  # the turns this process runs

    def new_turn_id(self) -> str:
        return uuid.uuid4().hex

    async def begin(self, session_id: str, turn_id: str) -> None:
        """Make ``turn_id`` the session's latest turn, with an empty log."""
        await self.backend.begin(session_id, turn_id)
        self._local.add(turn_id)

    async def append(self, session_id: str, turn_id: str, seq: int, name: str, data: dict[str, Any]) -> Event:
        body = json.dumps(data, ensure_ascii=False)
        if self._seal is not None:
            body = self._seal(session_id, body)
        await self.backend.append(session_id, turn_id, seq, name, body)
        if name in FINAL:
            self._local.discard(turn_id)
        wake = self._wake.pop(turn_id, None)
        if wake is not None:
            wake.set()
        return Event(turn_id, seq, name, data)

    async def heartbeat(self, session_id: str, turn_id: str) -> None:
        """Mark the log alive every ``HEARTBEAT_SECONDS`` until cancelled (the turn's task does)."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.backend.beat(session_id, turn_id)
            except Exception:  # a store hiccup: the next beat tries again
                continue

    async def latest(self, session_id: str) -> str | None:
        """The session's latest turn, or None."""
        return await self.backend.latest(session_id)

    async def known(self, session_id: str, turn_id: str) -> bool:
        """Whether ``turn_id`` is a turn of ``session_id`` whose log is still kept."""
        return await self.backend.beat_of(session_id, turn_id) is not None

    async def so_far(self, session_id: str, turn_id: str) -> list[Event]:
        """The events logged so far, without waiting; a lost turn's log ends with ``LOST``."""
        rows = await self.backend.read(session_id, turn_id, 0, 0)
        events = [
            Event(turn_id, seq, name, json.loads(self._open(session_id, body))) for seq, name, body in rows
        ]
        if (not events or events[-1].name not in FINAL) and await self._abandoned(session_id, turn_id):
            events.append(Event(turn_id, len(events) + 1, "error", LOST))
        return events

    def _open(self, session_id: str, body: str) -> str:
        return body if self._unseal is None else self._unseal(session_id, body)

    async def follow(self, session_id: str, turn_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The turn's events after ``after``, as they come, through ``done`` or ``error``.

        A turn running in this process wakes its readers as it writes; others are read by
        blocking (Redis) or polling (SQL), so only rejoining readers hold a connection while waiting."""
        quiet_since = time.monotonic()
        while True:
            wake = self._wake.setdefault(turn_id, asyncio.Event())
            local = turn_id in self._local
            rows = await self.backend.read(session_id, turn_id, after, 0 if local else POLL_SECONDS)
            if not rows:
                if time.monotonic() - quiet_since > HEARTBEAT_SECONDS and await self._abandoned(
                    session_id, turn_id
                ):
                    # Written to the log, so every reader, on any worker, ends the same way.
                    try:
                        await self.append(session_id, turn_id, after + 1, "error", LOST)
                    except Exception:  # another reader, or the worker after all, wrote that event first
                        pass
                    continue
                try:
                    await asyncio.wait_for(wake.wait(), HEARTBEAT_SECONDS if local else POLL_SECONDS)
                except TimeoutError:
                    pass
                continue
            quiet_since = time.monotonic()
            for seq, name, body in rows:
                if seq <= after:
                    continue  # never an event twice
                after = seq
                yield Event(turn_id, seq, name, json.loads(self._open(session_id, body)))
                if name in FINAL:
                    return

    async def _abandoned(self, session_id: str, turn_id: str) -> bool:
        beat = await self.backend.beat_of(session_id, turn_id)
        return beat is None or time.time() - beat > self.stale_after

    async def forget(self, session_id: str) -> None:
        """Remove every turn log of ``session_id`` (the conversation, or its user, is deleted)."""
        await self.backend.forget(session_id)

    async def close(self) -> None:
        await self.backend.close()


class TurnWriter:
    """What the task running one turn writes its events with; the log's first event is ``turn``."""

    def __init__(self, logs: TurnLogs, session_id: str, turn_id: str) -> None:
        self.logs, self.session_id, self.turn_id = logs, session_id, turn_id
        self.seq = 0

    @classmethod
    async def begin(cls, logs: TurnLogs, session_id: str) -> TurnWriter:
        """A new turn, now the session's latest, its log holding ``event: turn`` with its id."""
        writer = cls(logs, session_id, logs.new_turn_id())
        await logs.begin(session_id, writer.turn_id)
        await writer.emit("turn", {"turn_id": writer.turn_id})
        return writer

    async def emit(self, name: str, data: dict[str, Any]) -> None:
        self.seq += 1
        await self.logs.append(self.session_id, self.turn_id, self.seq, name, data)

    def heartbeat(self) -> Any:
        """The coroutine marking this turn's log alive; run it as a task while the turn runs."""
        return self.logs.heartbeat(self.session_id, self.turn_id)


# --- Redis: a stream per turn -----------------------------------------------------------------


class RedisLogs:
    """``<prefix>/turnlog/<session id>`` (hash: ``latest`` turn, each turn's heartbeat) and
    ``<prefix>/turnlog/<session id>/<turn id>`` (the turn's stream); the SDK's keys are ``<prefix>:...``."""

    def __init__(self, client: Any, key_prefix: str, keep: float = KEEP_SECONDS) -> None:
        self.client = client
        self.prefix = f"{key_prefix}/turnlog/"
        self.keep = int(keep)

    def _head(self, session_id: str) -> str:
        return self.prefix + session_id

    def _stream(self, session_id: str, turn_id: str) -> str:
        return f"{self.prefix}{session_id}/{turn_id}"

    async def begin(self, session_id: str, turn_id: str) -> None:
        head = self._head(session_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(head, mapping={"latest": turn_id, turn_id: repr(time.time())})
            pipe.expire(head, self.keep)
            await pipe.execute()

    async def append(self, session_id: str, turn_id: str, seq: int, name: str, data: str) -> None:
        stream, head = self._stream(session_id, turn_id), self._head(session_id)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(stream, {"e": name, "d": data}, id=f"0-{seq}")
            pipe.expire(stream, self.keep)
            pipe.hset(head, turn_id, repr(time.time()))
            pipe.expire(head, self.keep)
            await pipe.execute()

    async def beat(self, session_id: str, turn_id: str) -> None:
        await self.client.hset(self._head(session_id), turn_id, repr(time.time()))

    async def latest(self, session_id: str) -> str | None:
        found = await self.client.hget(self._head(session_id), "latest")
        return None if found is None else (found.decode() if isinstance(found, bytes) else str(found))

    async def beat_of(self, session_id: str, turn_id: str) -> float | None:
        found = await self.client.hget(self._head(session_id), turn_id)
        return None if found is None else float(found)

    async def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> list[tuple[int, str, str]]:
        stream = self._stream(session_id, turn_id)
        block = int(wait * 1000) if wait > 0 else None
        found = await self.client.xread({stream: f"0-{after}"}, count=512, block=block)
        rows: list[tuple[int, str, str]] = []
        for _, entries in found or []:
            for entry_id, fields in entries:
                seq = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[1])
                values = {
                    (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                    for k, v in fields.items()
                }
                rows.append((seq, values["e"], values["d"]))
        return rows

    async def forget(self, session_id: str) -> None:
        head = self._head(session_id)
        fields = [f.decode() if isinstance(f, bytes) else str(f) for f in await self.client.hkeys(head)]
        streams = [self._stream(session_id, turn) for turn in fields if turn != "latest"]
        await self.client.delete(head, *streams)

    async def close(self) -> None:
        return None  # the store closes its client


# --- SQL: two tables, read by polling --------------------------------------------------------

_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {TURNS_TABLE} (session_id VARCHAR NOT NULL, turn_id VARCHAR NOT NULL, "
    "started DOUBLE PRECISION NOT NULL, beat DOUBLE PRECISION NOT NULL, PRIMARY KEY (session_id, turn_id))",
    f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (session_id VARCHAR NOT NULL, turn_id VARCHAR NOT NULL, "
    "seq INTEGER NOT NULL, name VARCHAR NOT NULL, data TEXT NOT NULL, "
    "PRIMARY KEY (session_id, turn_id, seq))",
)
_FINISHED = f"SELECT turn_id FROM {EVENTS_TABLE} WHERE session_id = :s AND name IN ('done', 'error')"
_BEGIN = (  # the logs of the session's finished turns go; a running one stays for its readers
    f"DELETE FROM {TURNS_TABLE} WHERE session_id = :s AND turn_id IN ({_FINISHED})",
    f"DELETE FROM {EVENTS_TABLE} WHERE session_id = :s AND turn_id IN ({_FINISHED})",
    f"INSERT INTO {TURNS_TABLE} (session_id, turn_id, started, beat) VALUES (:s, :t, :b, :b)",
)
_APPEND = (
    f"INSERT INTO {EVENTS_TABLE} (session_id, turn_id, seq, name, data) VALUES (:s, :t, :q, :n, :d) "
    "ON CONFLICT DO NOTHING",  # two readers noting a lost worker at once: one note
    f"UPDATE {TURNS_TABLE} SET beat = :b WHERE session_id = :s AND turn_id = :t",
)
_FORGET = (
    f"DELETE FROM {EVENTS_TABLE} WHERE session_id = :s",
    f"DELETE FROM {TURNS_TABLE} WHERE session_id = :s",
)
_BEAT = f"UPDATE {TURNS_TABLE} SET beat = :b WHERE session_id = :s AND turn_id = :t"
_LATEST = f"SELECT turn_id FROM {TURNS_TABLE} WHERE session_id = :s ORDER BY started DESC LIMIT 1"
_BEAT_OF = f"SELECT beat FROM {TURNS_TABLE} WHERE session_id = :s AND turn_id = :t"
_READ = (
    f"SELECT seq, name, data FROM {EVENTS_TABLE} WHERE session_id = :s AND turn_id = :t AND seq > :q "
    "ORDER BY seq"
)


class _SQLLogs:
    """Turn logs in two tables (``_TABLES``): every operation is statements run by ``_run``."""

    async def _run(self, statements: tuple[str, ...], params: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    async def begin(self, session_id: str, turn_id: str) -> None:
        await self._run(_BEGIN, {"s": session_id, "t": turn_id, "b": time.time()})

    async def append(self, session_id: str, turn_id: str, seq: int, name: str, data: str) -> None:
        await self._run(
            _APPEND, {"s": session_id, "t": turn_id, "q": seq, "n": name, "d": data, "b": time.time()}
        )

    async def beat(self, session_id: str, turn_id: str) -> None:
        await self._run((_BEAT,), {"s": session_id, "t": turn_id, "b": time.time()})

    async def latest(self, session_id: str) -> str | None:
        rows = await self._run((_LATEST,), {"s": session_id})
        return str(rows[0][0]) if rows else None

    async def beat_of(self, session_id: str, turn_id: str) -> float | None:
        rows = await self._run((_BEAT_OF,), {"s": session_id, "t": turn_id})
        return float(rows[0][0]) if rows else None

    async def read(
        self, session_id: str, turn_id: str, after: int, wait: float
    ) -> list[tuple[int, str, str]]:
        rows = await self._run((_READ,), {"s": session_id, "t": turn_id, "q": after})
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def forget(self, session_id: str) -> None:
        await self._run(_FORGET, {"s": session_id})


class EngineLogs(_SQLLogs):
    """Turn logs in PostgreSQL through the store's SQLAlchemy engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._ready = False
        self._lock = asyncio.Lock()

    async def _run(self, statements: tuple[str, ...], params: dict[str, Any]) -> list[Any]:
        if not self._ready:
            async with self._lock:
                if not self._ready:
                    async with self.engine.begin() as conn:
                        if self.engine.dialect.name == "postgresql":  # one creator at a time
                            await conn.execute(text(f"SELECT pg_advisory_xact_lock({SETUP_LOCK})"))
                        for create in _TABLES:
                            await conn.execute(text(create))
                    self._ready = True
        rows: list[Any] = []
        async with self.engine.begin() as conn:
            for sql in statements:
                result = await conn.execute(text(sql), params)
                if result.returns_rows:
                    rows = list(result.fetchall())
        return rows

    async def close(self) -> None:
        return None  # the store disposes of its engine


class SQLiteLogs(_SQLLogs):
    """Turn logs in the store's SQLite file (several workers on one file share them)."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path)
        self._ready = False

    def _sync(self, statements: tuple[str, ...], params: dict[str, Any]) -> list[Any]:
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            with conn:
                if not self._ready:
                    for create in _TABLES:
                        conn.execute(create.replace("DOUBLE PRECISION", "REAL"))
                rows: list[Any] = []
                for sql in statements:
                    cursor = conn.execute(sql, params)
                    if cursor.description is not None:
                        rows = cursor.fetchall()
            self._ready = True
            return rows
        finally:
            conn.close()

    async def _run(self, statements: tuple[str, ...], params: dict[str, Any]) -> list[Any]:
        return await asyncio.to_thread(self._sync, statements, params)

    async def close(self) -> None:
        return None


def turn_logs_for(store: SessionStore, *, stale_after: float = STALE_SECONDS) -> TurnLogs:
    """The turn logs of ``store``, on its own client, engine or file (an encrypted store's: sealed)."""
    seal = unseal = None
    if isinstance(store, EncryptedStore):  # events encrypted under the session's key, as its items
        seal, unseal = store.seal, store.unseal
        store = store.store
    backend: LogBackend
    if isinstance(store, RedisStore):
        backend = RedisLogs(store.client, store.key_prefix)
    elif isinstance(store, SQLStore):
        backend = EngineLogs(store.engine)
    elif isinstance(store, SQLiteStore):
        backend = SQLiteLogs(store.db_path)
    else:
        raise TypeError(f"no turn logs for {type(store).__name__}")
    return TurnLogs(backend, seal=seal, unseal=unseal, stale_after=stale_after)
