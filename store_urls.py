"""Stores chosen by URL (``--store URL`` or ``SESSION_STORE_URL``), beyond the default SQLite file.

- ``redis://host:port/db``: the SDK's ``RedisSession`` over one shared client per store. Keys
  start with an app prefix (``?key_prefix=NAME``, default ``multi_sessions``); ``?ttl=SECONDS``
  makes idle sessions expire in Redis itself.
- ``postgresql://user@host:port/db``: the SDK's ``SQLAlchemySession`` over one shared async
  engine (asyncpg), so every session shares one bounded connection pool.
- ``sqlite+aiosqlite:///path.db``: the same ``SQLAlchemySession`` over a SQLite file: the
  recommended pattern for many concurrent users on one machine (bounded connections; see bench.py).

Each store also gives the inventory (list, delete, expire) and keeps each session's last agent
beside it. Redis and SQLAlchemy clients belong to the event loop that made them, so stores are
cached per URL *and* loop. Missing drivers and unreachable servers become one ``StoreError`` line.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from agents.memory import Session
from dotenv import load_dotenv

from stores import LAST_AGENT_TABLE, MESSAGES_TABLE, SESSIONS_TABLE, SessionInfo, StoreError

INSTALL_HINT = "install the store drivers: pip install -r requirements-stores.txt"
DEFAULT_KEY_PREFIX = "multi_sessions"


@cache
def _load_dotenv_once() -> None:
    load_dotenv()


def store_url() -> str | None:
    """The configured store URL, or None for the default SQLite file."""
    _load_dotenv_once()
    return os.environ.get("SESSION_STORE_URL", "").strip() or None


def _split_options(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """Take our own query options out of a URL, leaving the driver's."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    ours = {k: v for k, v in query if k in names}
    rest = [(k, v) for k, v in query if k not in names]
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts._replace(query=""))


class RedisStore:
    """Sessions in Redis: one shared client, keys ``<prefix>:<session id>[:messages]``."""

    owned = True

    def __init__(self, url: str | None = None, *, client: Any = None, key_prefix: str | None = None) -> None:
        try:
            import redis.asyncio as redis
            from agents.extensions.memory import RedisSession
        except ImportError:
            raise StoreError(f"{url or 'redis'} needs the Redis driver; {INSTALL_HINT}") from None
        self._session_class = RedisSession
        options: dict[str, str] = {}
        if url is not None:
            url, options = _split_options(url, ("key_prefix", "ttl"))
            # A blocking pool: past 32 connections a command waits for one instead of failing
            # with "Too many connections" (it did at 1,000 users); it also bounds descriptors.
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=30)
            client = redis.Redis(connection_pool=pool)
        self.client = client
        self.key_prefix = key_prefix or options.get("key_prefix", DEFAULT_KEY_PREFIX)
        try:
            self.ttl = int(options["ttl"]) if "ttl" in options else None
        except ValueError:
            raise StoreError(f"ttl={options['ttl']!r} in the Redis URL must be whole seconds") from None
        self.name = f"Redis {_redacted(url) if url else 'client'} (prefix {self.key_prefix})"

    def open(self, session_id: str) -> Session:
        return self._session_class(
            session_id, redis_client=self.client, key_prefix=self.key_prefix, ttl=self.ttl
        )

    async def check(self) -> None:
        """Fail in one line if the server cannot be reached."""
        try:
            await asyncio.wait_for(self.client.ping(), 5)
        except Exception as exc:
            raise StoreError(
                f"{self.name} is unreachable ({type(exc).__name__}: {exc}); start Redis (see README) "
                "or fix --store / SESSION_STORE_URL"
            ) from None

    def _last_agent_key(self, session_id: str) -> str:
        return f"{self.key_prefix}:{session_id}:last_agent"

    async def list_sessions(self) -> list[SessionInfo]:
        rows = []
        async for key in self.client.scan_iter(match=f"{self.key_prefix}:*", count=500, _type="hash"):
            meta = {k.decode(): v.decode() for k, v in (await self.client.hgetall(key)).items()}
            if "session_id" not in meta:
                continue
            count = await self.client.llen(f"{key.decode()}:messages")
            rows.append(
                SessionInfo(
                    meta["session_id"], count, _epoch(meta.get("created_at")), _epoch(meta.get("updated_at"))
                )
            )
        return rows

    async def delete(self, session_id: str) -> int:
        session = self.open(session_id)
        removed = await self.client.llen(f"{self.key_prefix}:{session_id}:messages")
        await session.clear_session()
        await self.client.delete(self._last_agent_key(session_id))
        return int(removed)

    async def load_last_agent(self, session_id: str) -> str | None:
        value = await self.client.get(self._last_agent_key(session_id))
        return value.decode() if value is not None else None

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        await self.client.set(self._last_agent_key(session_id), agent_name, ex=self.ttl)

    async def close(self) -> None:
        if self.owned:
            await self.client.aclose()


def _epoch(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


class SQLStore:
    """Sessions in PostgreSQL (or SQLite via aiosqlite): ``SQLAlchemySession`` on one shared engine."""

    owned = True

    def __init__(self, url: str | None = None, *, engine: Any = None) -> None:
        try:
            from agents.extensions.memory import SQLAlchemySession
            from sqlalchemy.ext.asyncio import create_async_engine
        except ImportError:
            raise StoreError(f"{url} needs SQLAlchemy; {INSTALL_HINT}") from None
        self._session_class = SQLAlchemySession
        if engine is None:
            assert url is not None
            driver_url = url
            if url.startswith(("postgresql://", "postgres://")):
                driver_url = "postgresql+asyncpg://" + url.split("://", 1)[1]
            try:
                engine = create_async_engine(driver_url, pool_size=5, max_overflow=5)
            except ImportError as exc:
                raise StoreError(f"{_redacted(url)} needs its driver ({exc.name}); {INSTALL_HINT}") from None
        self.engine = engine
        self.name = f"{engine.dialect.name} {_redacted(url) if url else 'engine'}"
        self._tables_ready = False

    def open(self, session_id: str) -> Session:
        return self._session_class(session_id, engine=self.engine, create_tables=True)

    async def check(self) -> None:
        """Fail in one line if the database cannot be reached."""
        from sqlalchemy import text

        try:
            async with asyncio.timeout(10), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(
                f"{self.name} is unreachable ({reason}); start the server (see README) "
                "or fix --store / SESSION_STORE_URL"
            ) from None

    async def _ready(self) -> None:
        """Create the SDK's tables and our last-agent table if this is a new database."""
        if self._tables_ready:
            return
        from sqlalchemy import text

        await self.open("__init__").get_items(1)  # the SDK creates its own tables on first use
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {LAST_AGENT_TABLE} (session_id VARCHAR PRIMARY KEY, "
                    "agent_name VARCHAR NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
                )
            )
        self._tables_ready = True

    async def list_sessions(self) -> list[SessionInfo]:
        from sqlalchemy import text

        await self._ready()
        postgres = self.engine.dialect.name == "postgresql"
        # PostgreSQL keeps CURRENT_TIMESTAMP in the server's zone; ask for UTC explicitly.
        stamp = "{0} AT TIME ZONE current_setting('TimeZone') AT TIME ZONE 'UTC'" if postgres else "{0}"
        query = (
            f"SELECT s.session_id, {stamp.format('s.created_at')}, {stamp.format('s.updated_at')}, "
            f"(SELECT count(*) FROM {MESSAGES_TABLE} m WHERE m.session_id = s.session_id) "
            f"FROM {SESSIONS_TABLE} s"
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(query))).all()
        return [SessionInfo(r[0], int(r[3]), _utc(r[1]), _utc(r[2])) for r in rows]

    async def delete(self, session_id: str) -> int:
        from sqlalchemy import text

        await self._ready()
        async with self.engine.connect() as conn:
            removed = (
                await conn.execute(
                    text(f"SELECT count(*) FROM {MESSAGES_TABLE} WHERE session_id = :id"), {"id": session_id}
                )
            ).scalar_one()
        await self.open(session_id).clear_session()
        async with self.engine.begin() as conn:
            await conn.execute(
                text(f"DELETE FROM {LAST_AGENT_TABLE} WHERE session_id = :id"), {"id": session_id}
            )
        return int(removed)

    async def load_last_agent(self, session_id: str) -> str | None:
        from sqlalchemy import text

        await self._ready()
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    text(f"SELECT agent_name FROM {LAST_AGENT_TABLE} WHERE session_id = :id"),
                    {"id": session_id},
                )
            ).scalar_one_or_none()

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        from sqlalchemy import text

        await self._ready()
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"INSERT INTO {LAST_AGENT_TABLE} (session_id, agent_name) VALUES (:id, :name) "
                    "ON CONFLICT (session_id) DO UPDATE SET agent_name = excluded.agent_name, "
                    "updated_at = CURRENT_TIMESTAMP"
                ),
                {"id": session_id, "name": agent_name},
            )

    async def close(self) -> None:
        if self.owned:
            await self.engine.dispose()


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_store(url: str) -> Any:
    """A new store for ``url`` (in the running event loop)."""
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url)
    if scheme.startswith(("postgresql", "postgres", "sqlite+aiosqlite")):
        return SQLStore(url)
    raise StoreError(
        f"unknown store URL {_redacted(url)!r}; use redis://..., postgresql://... or "
        "sqlite+aiosqlite:///FILE (or no --store for the default SQLite file)"
    )


_stores: dict[tuple[str, int], Any] = {}


def store_for_url(url: str) -> Any:
    """The store for ``url`` in this event loop, made once and shared by all its sessions."""
    key = (url, id(asyncio.get_running_loop()))
    if key not in _stores:
        _stores[key] = make_store(url)
    return _stores[key]


async def close_stores() -> None:
    """Close the stores this event loop opened (their clients and pools)."""
    loop = id(asyncio.get_running_loop())
    for key in [k for k in _stores if k[1] == loop]:
        await _stores.pop(key).close()


def store_of_session(session: Session) -> Any:
    """The store a Redis or SQLAlchemy session object lives in (for its last agent)."""
    name = type(session).__name__
    if name == "RedisSession":
        client, prefix = session._redis, session._key_prefix  # type: ignore[attr-defined]
        for store in _stores.values():
            if isinstance(store, RedisStore) and store.client is client and store.key_prefix == prefix:
                return store
        store = RedisStore(client=client, key_prefix=prefix)
    elif name == "SQLAlchemySession":
        engine = session.engine  # type: ignore[attr-defined]
        for store in _stores.values():
            if isinstance(store, SQLStore) and store.engine is engine:
                return store
        store = SQLStore(engine=engine)
    else:
        raise StoreError(
            f"no inventory for {name} sessions; use SQLiteSession, RedisSession or SQLAlchemySession"
        )
    # Borrowed: the caller made this client or engine and closes it; close() leaves it open.
    store.owned = False
    _stores[(f"borrowed:{id(store)}", id(asyncio.get_running_loop()))] = store
    return store
