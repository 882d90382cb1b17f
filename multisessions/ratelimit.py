"""Turns a minute per user, one budget for every worker that shares the store.

A token bucket per user: ``per_minute`` turns a minute, in bursts of up to ``per_minute``. Where
the bucket lives follows the store, so that every worker of a server counts against the same
budget: a hash in Redis (one script), a row in PostgreSQL (one statement), a row in the SQLite
file (one transaction). ``LocalBuckets`` keeps them in the process, for one worker.

Each take is one call to the store, bounded by ``CHECK_SECONDS``. A store that fails or
hangs while the budget is checked lets the turn through (fail-open) and logs one line: the
turn needs the store anyway and reports its failure itself, and a limiter must never be the
reason every user waits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from multisessions.observers import is_store_failure
from multisessions.stores import EncryptedStore, RedisStore, SessionStore, SQLiteStore, SQLStore
from multisessions.stores.leases import SETUP_LOCK, text

__all__ = ["CHECK_SECONDS", "LocalBuckets", "TurnBudget", "turn_budget"]

CHECK_SECONDS = 1.0
"""How long checking the budget may take before the turn goes ahead unchecked."""
log = logging.getLogger("multisessions.ratelimit")


class TurnBudget(Protocol):
    """Where the buckets live: ``take`` one turn for ``key``, get 0.0 or the seconds to wait."""

    per_minute: int

    async def take(self, key: str) -> float: ...

    def close(self) -> None: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class LocalBuckets:
    """Buckets in this process: right for one worker; with N workers a user gets N budgets."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take_now(self, key: str) -> float:
        """``take`` without awaiting: the bucket is in memory."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        rate = self.per_minute / 60.0
        bucket = self._buckets.setdefault(key, _Bucket(float(self.per_minute), now))
        bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    async def take(self, key: str) -> float:
        """One turn for ``key``: 0.0 if allowed, else the seconds until the next is."""
        return self.take_now(key)

    def close(self) -> None:
        """Nothing to close: the buckets are in memory."""


class _SharedBuckets:
    """A bucket kept in the store: the check is bounded and fails open (module docstring)."""

    per_minute: int

    async def take(self, key: str) -> float:
        """One turn for ``key`` against the budget every worker shares: 0.0, or seconds to wait."""
        if self.per_minute <= 0:
            return 0.0
        try:
            return await asyncio.wait_for(self._take(key), CHECK_SECONDS)
        except TimeoutError:
            log.warning(
                "rate limit not checked: the store took over %s s; the turn goes ahead", CHECK_SECONDS
            )
        except Exception as exc:
            if not is_store_failure(exc):
                raise
            log.warning(
                "rate limit not checked: the store failed (%s); the turn goes ahead", type(exc).__name__
            )
        return 0.0

    async def _take(self, key: str) -> float:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to close: the store's own client is closed with the store."""


# Refill by the time passed (the server's own clock, the same for every worker), then take one
# token if there is one. Returns {allowed, tokens}. The key expires once a full bucket would.
_REDIS_TAKE = """
local cap = tonumber(ARGV[1])
local rate = cap / 60.0
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or cap
local updated = tonumber(state[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - updated) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], 61)
return {allowed, tostring(tokens)}
"""


class RedisBuckets(_SharedBuckets):
    """Buckets in the store's Redis, under the store's key prefix: one script per take."""

    def __init__(self, store: RedisStore, per_minute: int) -> None:
        self.per_minute = per_minute
        self._client = store.client
        self._prefix = f"{store.key_prefix}:rate:"
        self._script = store.client.register_script(_REDIS_TAKE)

    async def _take(self, key: str) -> float:
        allowed, tokens = await self._script(keys=[self._prefix + key], args=[self.per_minute])
        return 0.0 if int(allowed) else _wait(float(tokens), self.per_minute)


_PG_TABLE = """
CREATE TABLE IF NOT EXISTS multisessions_rate (
  key TEXT PRIMARY KEY,
  tokens DOUBLE PRECISION NOT NULL,
  updated DOUBLE PRECISION NOT NULL,
  allowed BOOLEAN NOT NULL
)
"""
# One statement: the row is locked for its update, so two workers taking at once are serialized
# by the database. The clock is the database's, the same for every worker.
_PG_TAKE = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::double precision AS t)
INSERT INTO multisessions_rate AS r (key, tokens, updated, allowed)
SELECT :key, :cap - 1, now.t, true FROM now
ON CONFLICT (key) DO UPDATE SET
  allowed = least(:cap, r.tokens + greatest(0, excluded.updated - r.updated) * :rate) >= 1,
  tokens = least(:cap, r.tokens + greatest(0, excluded.updated - r.updated) * :rate)
    - CASE WHEN least(:cap, r.tokens + greatest(0, excluded.updated - r.updated) * :rate) >= 1
      THEN 1 ELSE 0 END,
  updated = excluded.updated
RETURNING allowed, tokens
"""


class PostgresBuckets(_SharedBuckets):
    """Buckets in a table of the store's PostgreSQL database: one statement per take."""

    def __init__(self, store: SQLStore, per_minute: int) -> None:
        self.per_minute = per_minute
        self._engine = store.engine
        self._statement = text(_PG_TAKE)
        self._ready = False

    async def _take(self, key: str) -> float:
        if not self._ready:
            async with self._engine.begin() as conn:  # one creator at a time, as the store's tables
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETUP_LOCK})
                await conn.execute(text(_PG_TABLE))
            self._ready = True
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    self._statement,
                    {"key": key, "cap": float(self.per_minute), "rate": self.per_minute / 60.0},
                )
            ).one()
        allowed, tokens = row
        return 0.0 if allowed else _wait(float(tokens), self.per_minute)


class SQLiteBuckets(_SharedBuckets):
    """Buckets in a table of the store's SQLite file, shared by the workers on that file.

    One connection, used off the event loop one take at a time. A lost take (a crash before the
    write reaches the disk) only gives a turn back, so the table is written without waiting for
    the disk.
    """

    def __init__(self, db_path: str | Path, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_minute = per_minute
        self.db_path = Path(db_path)
        self.clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.db_path, timeout=CHECK_SECONDS, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS multisessions_rate "
                "(key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL)"
            )
            self._conn = conn
        return self._conn

    def _take_in_thread(self, key: str) -> float:
        with self._lock:
            conn = self._connection()
            now = self.clock()
            cap = float(self.per_minute)
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT tokens, updated FROM multisessions_rate WHERE key = ?", (key,)
                ).fetchone()
                tokens = cap if row is None else min(cap, row[0] + max(0.0, now - row[1]) * cap / 60.0)
                allowed = tokens >= 1.0
                if allowed:
                    tokens -= 1.0
                conn.execute(
                    "INSERT INTO multisessions_rate (key, tokens, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
                    (key, tokens, now),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return 0.0 if allowed else _wait(tokens, self.per_minute)

    async def _take(self, key: str) -> float:
        return await asyncio.to_thread(self._take_in_thread, key)

    def close(self) -> None:
        """Close the connection (a new one opens on the next take)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _wait(tokens: float, per_minute: int) -> float:
    """Seconds until a bucket holding ``tokens`` holds one whole token again."""
    return max(0.0, (1.0 - tokens) * 60.0 / per_minute)


def turn_budget(store: SessionStore, per_minute: int) -> TurnBudget:
    """The budget every worker on ``store`` shares: in its Redis, its PostgreSQL database or its
    SQLite file; in this process for any other store (an in-memory or custom one)."""
    plain: Any = store.store if isinstance(store, EncryptedStore) else store
    if per_minute <= 0:
        return LocalBuckets(0)
    if isinstance(plain, RedisStore):
        return RedisBuckets(plain, per_minute)
    if isinstance(plain, SQLStore) and plain.engine.dialect.name == "postgresql":
        return PostgresBuckets(plain, per_minute)
    if isinstance(plain, SQLiteStore):
        return SQLiteBuckets(plain.db_path, per_minute)
    return LocalBuckets(per_minute)
