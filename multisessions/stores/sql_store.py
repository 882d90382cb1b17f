"""Sessions in PostgreSQL (or any SQLAlchemy database): ``SQLAlchemySession`` on one shared engine.

The SDK's tables (``agent_sessions``, ``agent_messages``) plus ``agent_session_last_agent``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from agents.memory import Session

from multisessions.errors import StoreError
from multisessions.stores.base import SessionInfo
from multisessions.stores.sqlite_store import LAST_AGENT_TABLE, MESSAGES_TABLE, SESSIONS_TABLE
from multisessions.stores.urls import INSTALL_HINT, redact_url

try:
    from sqlalchemy import text
except ImportError:  # the optional drivers are missing; SQLStore() says so in one line
    text = None  # type: ignore[assignment]


class SQLStore:
    """Sessions in PostgreSQL (or SQLite via aiosqlite): ``SQLAlchemySession`` on one shared engine."""

    def __init__(self, url: str) -> None:
        try:
            from agents.extensions.memory import SQLAlchemySession
            from sqlalchemy.ext.asyncio import create_async_engine
        except ImportError:
            raise StoreError(f"{redact_url(url)} needs SQLAlchemy; {INSTALL_HINT}") from None
        self._session_class = SQLAlchemySession
        driver_url = url
        if url.startswith(("postgresql://", "postgres://")):
            driver_url = "postgresql+asyncpg://" + url.split("://", 1)[1]
        try:
            self.engine: Any = create_async_engine(driver_url, pool_size=5, max_overflow=5)
        except ImportError as exc:
            raise StoreError(f"{redact_url(url)} needs its driver ({exc.name}); {INSTALL_HINT}") from None
        self.name = f"{self.engine.dialect.name} {redact_url(url)}"
        self._tables_ready = False

    def open(self, session_id: str) -> Session:
        return self._session_class(session_id, engine=self.engine, create_tables=True)

    async def check(self) -> None:
        """Fail in one line if the database cannot be reached."""
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
        await self._ready()
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(
                    text(f"SELECT agent_name FROM {LAST_AGENT_TABLE} WHERE session_id = :id"),
                    {"id": session_id},
                )
            ).scalar_one_or_none()
        return None if value is None else str(value)

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
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
        await self.engine.dispose()


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(stamp, datetime)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
