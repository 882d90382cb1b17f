"""Where sessions live: a SQLite file by default, or Redis or PostgreSQL by URL.

``open_store(url)`` is the one factory: no URL means the SQLite file, ``redis://...`` the
SDK's ``RedisSession`` over one client, ``postgresql://...`` its ``SQLAlchemySession`` over one
engine. Every store gives the same inventory and keeps each session's last agent.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agents import SQLiteSession

from multisessions.errors import StoreError
from multisessions.locks import LeaseBackend
from multisessions.stores.base import SessionInfo, SessionStore, close_session, noted_leases
from multisessions.stores.leases import SQLiteLeases
from multisessions.stores.redis_store import RedisStore
from multisessions.stores.sql_store import SQLStore
from multisessions.stores.sqlite_store import PooledSession, SQLitePool, SQLiteStore, check_db_path
from multisessions.stores.urls import redact_url

__all__ = [
    "DEFAULT_DB",
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
    "open_store",
]

DEFAULT_DB = "multi_sessions.db"
"""The SQLite file sessions live in when no store URL is given."""


def open_store(url: str | None = None, *, db_path: str | Path = DEFAULT_DB) -> SessionStore:
    """The store ``url`` names, or the SQLite file ``db_path`` when there is no URL.

    Redis and SQLAlchemy clients belong to the event loop that first uses them: open a store in
    the loop that will use it, and ``await store.close()`` there.
    """
    if not url:
        return SQLiteStore(db_path)
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisStore(url)
    if scheme.startswith(("postgresql", "postgres", "sqlite+aiosqlite")):
        return SQLStore(url)
    raise StoreError(
        f"unknown store URL {redact_url(url)!r}; use redis://..., postgresql://... or "
        "sqlite+aiosqlite:///FILE (or no --store for the default SQLite file)"
    )


_sqlite_leases: OrderedDict[Path, SQLiteLeases] = OrderedDict()
_KEEP_FILES = 16  # lease connections kept open per process (most recently used files)


def leases_for(session: Any) -> LeaseBackend | None:
    """Where turns on ``session`` take their cross-process lease; None: this process only.

    Sessions from a store use that store's leases; a plain ``SQLiteSession`` (or a pooled one)
    on a file uses a table in that file. An in-memory SQLite session is private to its object.
    """
    noted = noted_leases(session)
    if noted is not None:
        return noted
    if isinstance(session, SQLiteSession | PooledSession):
        path = session.db_path if isinstance(session, SQLiteSession) else session.pool.db_path
        if str(path) == ":memory:":
            return None
        return _sqlite_leases_at(Path(path).absolute())
    return None


def _sqlite_leases_at(path: Path) -> SQLiteLeases:
    leases = _sqlite_leases.pop(path, None) or SQLiteLeases(path)
    _sqlite_leases[path] = leases
    while len(_sqlite_leases) > _KEEP_FILES:
        _sqlite_leases.popitem(last=False)[1].close()
    return leases
