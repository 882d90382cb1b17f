"""Where sessions live: a SQLite file by default, or Redis or PostgreSQL by URL.

``open_store(url)`` is the one factory: no URL means the SQLite file, ``redis://...`` the
SDK's ``RedisSession`` over one client, ``postgresql://...`` its ``SQLAlchemySession`` over one
engine. Every store gives the same inventory and keeps each session's last agent.

``store_for(settings)`` is how every entry point (the command line, serve.py, the tools) opens
the store the settings name: encryption is a property of the store, decided there from
``SESSION_ENCRYPTION_KEY``, so no path can write plaintext beside encrypted sessions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents import SQLiteSession

from multisessions.errors import StoreError
from multisessions.locks import LeaseBackend
from multisessions.settings import Settings
from multisessions.stores.base import (
    KEEP,
    SessionInfo,
    SessionStore,
    Summary,
    TurnIO,
    TurnStart,
    TurnWrite,
    close_session,
    noted_store,
    store_failures,
)
from multisessions.stores.encrypted import EncryptedStore, refuse_encrypted, refuse_sealed, tenant_key
from multisessions.stores.redis_store import RedisStore
from multisessions.stores.sql_store import SQLStore
from multisessions.stores.sqlite_store import (
    PooledSession,
    SQLitePool,
    SQLiteStore,
    check_db_path,
    describe_sqlite_failure,
)
from multisessions.stores.urls import redact_url, scrub

__all__ = [
    "DEFAULT_DB",
    "KEEP",
    "Summary",
    "TurnWrite",
    "commit_outcome_unknown",
    "driver_errors",
    "EncryptedStore",
    "PooledSession",
    "RedisStore",
    "SQLStore",
    "SQLitePool",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
    "TurnIO",
    "TurnStart",
    "check_db_path",
    "close_session",
    "leases_for",
    "store_of",
    "describe_sqlite_failure",
    "open_store",
    "store_for",
    "redact_url",
    "refuse_encrypted",
    "refuse_sealed",
    "scrub",
    "store_failures",
    "tenant_key",
]

DEFAULT_DB = "multi_sessions.db"
"""The SQLite file sessions live in when no store URL is given."""


def driver_errors() -> tuple[type[BaseException], ...]:
    """The base exceptions of the store drivers this process has loaded (a failing server, a lost
    connection). A driver never loaded raised nothing, so start-up need not import any of them."""
    errors: list[type[BaseException]] = []
    if "redis.exceptions" in sys.modules:
        errors.append(sys.modules["redis.exceptions"].RedisError)
    if "sqlalchemy.exc" in sys.modules:
        errors.append(sys.modules["sqlalchemy.exc"].SQLAlchemyError)
    return tuple(errors)


def commit_outcome_unknown(exc: BaseException) -> bool:
    """Whether a commit that raised ``exc`` may still have been applied: the connection to a
    server store was lost after the request could have reached it. A statement the server
    refused, a SQLite error or anything raised before sending wrote nothing."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__
        if module.startswith("redis") and isinstance(current, ConnectionError | TimeoutError):
            return True
        if module.startswith("redis") and type(current).__name__ in ("ConnectionError", "TimeoutError"):
            return True
        if module.startswith("asyncpg") and type(current).__name__ in (
            "ConnectionDoesNotExistError",
            "ConnectionFailureError",
        ):
            return True
        if isinstance(current, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            return True
        current = current.__cause__ or current.__context__
    return False


def open_store(
    url: str | None = None, *, db_path: str | Path = DEFAULT_DB, encryption_key: str | None = None
) -> SessionStore:
    """The store ``url`` names, or the SQLite file ``db_path`` when there is no URL.

    With ``encryption_key`` every session is encrypted at rest (``EncryptedStore``: a key per
    tenant from that one secret). Redis and SQLAlchemy clients belong to the event loop that
    first uses them: open a store in the loop that will use it, and ``await store.close()`` there.
    """
    store = _plain_store(url, db_path)
    return EncryptedStore(store, encryption_key) if encryption_key else store


def store_for(
    settings: Settings, *, db_path: str | Path = DEFAULT_DB, max_open: int | None = None
) -> SessionStore:
    """The store ``settings`` name (``SESSION_STORE_URL``, else the SQLite file ``db_path``),
    encrypted when ``SESSION_ENCRYPTION_KEY`` is set. ``max_open``: a pooled SQLite file holding
    at most that many connections (a server's many users), instead of one per session."""
    store = _plain_store(settings.store_url, db_path, max_open)
    return EncryptedStore(store, settings.encryption_key) if settings.encryption_key else store


def _plain_store(url: str | None, db_path: str | Path, max_open: int | None = None) -> SessionStore:
    if not url:
        if max_open is not None:  # no connection held between operations, however many users
            return SQLiteStore(db_path, pool=SQLitePool(db_path, max_open=max_open))
        return SQLiteStore(db_path)
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url)
    if scheme.startswith(("postgresql", "postgres", "sqlite+aiosqlite")):
        return SQLStore(url)
    raise StoreError(
        f"unknown store URL {redact_url(url)!r}; use redis://..., postgresql://... or "
        "sqlite+aiosqlite:///FILE (or no --store for the default SQLite file)"
    )


def store_of(session: Any) -> SessionStore | None:
    """The store ``session`` lives in: the one that opened it, or its SQLite file; None if unknown.

    An in-memory SQLite session is private to its object: it has no store to share.
    """
    noted = noted_store(session)
    if noted is not None:
        return noted
    if isinstance(session, SQLiteSession | PooledSession):
        path = session.db_path if isinstance(session, SQLiteSession) else session.pool.db_path
        if str(path) != ":memory:":
            return SQLiteStore(path)
    return None


def leases_for(session: Any) -> LeaseBackend | None:
    """Where turns on ``session`` take their cross-process lease; None: this process only."""
    store = store_of(session)
    return None if store is None else store.leases
