"""Where sessions live: a SQLite file by default, or Redis or PostgreSQL by URL.

``open_store(url)`` is the one factory: no URL means the SQLite file, ``redis://...`` the
SDK's ``RedisSession`` over one client, ``postgresql://...`` its ``SQLAlchemySession`` over one
engine. Every store gives the same inventory and keeps each session's last agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents import SQLiteSession

from multisessions.errors import StoreError
from multisessions.locks import LeaseBackend
from multisessions.stores.base import SessionInfo, SessionStore, close_session, noted_store, store_failures
from multisessions.stores.encrypted import EncryptedStore, tenant_key
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
    "DRIVER_ERRORS",
    "EncryptedStore",
    "PooledSession",
    "RedisStore",
    "SQLStore",
    "SQLitePool",
    "SQLiteStore",
    "SessionInfo",
    "SessionStore",
    "check_db_path",
    "close_session",
    "leases_for",
    "store_of",
    "describe_sqlite_failure",
    "open_store",
    "redact_url",
    "scrub",
    "store_failures",
    "tenant_key",
]

_driver_errors: list[type[BaseException]] = []
try:
    from redis.exceptions import RedisError

    _driver_errors.append(RedisError)
except ImportError:  # the optional drivers are missing
    pass
try:
    from sqlalchemy.exc import SQLAlchemyError

    _driver_errors.append(SQLAlchemyError)
except ImportError:
    pass

DEFAULT_DB = "multi_sessions.db"
"""The SQLite file sessions live in when no store URL is given."""


DRIVER_ERRORS = tuple(_driver_errors)
"""The base exceptions of the optional drivers installed here (a failing server, a lost connection)."""


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


def _plain_store(url: str | None, db_path: str | Path) -> SessionStore:
    if not url:
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
