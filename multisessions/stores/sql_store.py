"""Sessions in PostgreSQL (or any SQLAlchemy database): ``SQLAlchemySession`` on one shared engine.

The SDK's tables (``agent_sessions``, ``agent_messages``) plus ``agent_session_last_agent`` and
``agent_session_pending``. On PostgreSQL, turns on the store's own sessions take a short path
(pg_turns.py): one round trip to start, one to commit, in the same tables and formats.
"""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime
from typing import Any

from agents.memory import Session

from multisessions.errors import ConfigError, StoreError
from multisessions.locks import WAIT_SECONDS
from multisessions.naming import memory_scope
from multisessions.sdk_private import plain_sqlalchemy_session, sqlalchemy_session_fields
from multisessions.stores.base import (
    ConversationRow,
    SessionInfo,
    Summary,
    TurnIO,
    remember_store,
    store_failures,
    tags_from_json,
)
from multisessions.stores.diagnose import describe_store_failure
from multisessions.stores.leases import SETUP_LOCK, SQLLeases, text
from multisessions.stores.pg_turns import (
    CREATE_CONVERSATIONS_TABLE_SQL,
    CREATE_MEMORY_TABLE_SQL,
    CREATE_SUMMARIES_TABLE_SQL,
    PostgresTurns,
)
from multisessions.stores.sqlite_turns import (
    CONVERSATIONS_TABLE,
    CREATE_CONVERSATIONS_INDEX,
    EFFECTS_TABLE,
    LAST_AGENT_TABLE,
    MEMORY_TABLE,
    MESSAGES_TABLE,
    PENDING_TABLE,
    SESSIONS_TABLE,
    SUMMARIES_TABLE,
)
from multisessions.stores.urls import INSTALL_HINT, redact_url, scrub


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
            # A burst of session calls queues for the pool's 10 connections. SQLAlchemy's default
            # 30 s wait failed first calls of a thousand users at once in the bench; wait as long
            # as a turn waits for a busy session.
            self.engine: Any = create_async_engine(
                driver_url, pool_size=5, max_overflow=5, pool_timeout=WAIT_SECONDS
            )
        except ImportError as exc:
            raise StoreError(f"{redact_url(url)} needs its driver ({exc.name}); {INSTALL_HINT}") from None
        except Exception as exc:  # SQLAlchemy refuses the URL; its message may quote it
            reason = scrub(str(exc), url)
            raise ConfigError(f"{redact_url(url)} is not a URL SQLAlchemy takes ({reason})") from None
        self._url = url  # kept only to scrub its secrets from driver errors
        self.name = f"{self.engine.dialect.name} {redact_url(url)}"
        self.leases = SQLLeases(self.engine)
        self._tables_ready = False
        self._tables_lock = asyncio.Lock()
        self._turns: PostgresTurns | None = None
        self._templates: dict[bool, Any] = {}
        if self.engine.dialect.name == "postgresql":
            _, args = self.engine.dialect.create_connect_args(self.engine.url)
            connect = dict(args)
            for adapter_only in ("prepared_statement_cache_size", "prepared_statement_name_func"):
                connect.pop(adapter_only, None)  # SQLAlchemy's adapter options, not asyncpg's
            self._turns = PostgresTurns(connect, self._ready, self.leases, self.name, url)

    def open(self, session_id: str) -> Session:
        """The SDK's ``SQLAlchemySession`` for ``session_id`` on this store's engine.

        Two costs of the SDK's constructor are avoided, both measured with a thousand sessions:
        with create_tables=True each new object checks the catalog for the tables on its first use
        (three queries, one object at a time behind a lock it polls), needless once this store
        made them; and each builds its own schema objects (hundreds of objects the garbage
        collector then walks), the same for every session of this store. So a
        session is a copy of a template with its own id and settings, when the SDK's session
        holds exactly the fields known to be shareable; otherwise it is built as usual.
        """
        create = not self._tables_ready
        template = self._templates.get(create)
        if template is None:
            template = self._session_class("", engine=self.engine, create_tables=create)
            self._templates[create] = template
        shareable = sqlalchemy_session_fields()
        if shareable is None or set(vars(template)) != shareable:
            session = self._session_class(session_id, engine=self.engine, create_tables=create)
            return remember_store(session, self)
        session = object.__new__(self._session_class)
        session.__dict__.update(vars(template))
        session.session_id = session_id
        session.session_settings = copy.copy(template.session_settings)
        return remember_store(session, self)

    def turn_io(self, session: Session) -> TurnIO | None:
        """The PostgreSQL short path, for a plain ``SQLAlchemySession`` on this store's engine with
        the default tables and JSON: what the short path writes is what that session would write.
        Anything else (a subclass, other tables, another engine, SQLite) goes through the session."""
        if self._turns is None or type(session) is not self._session_class:
            return None
        # The SDK's own fields: a version without them gets no short path.
        if not plain_sqlalchemy_session(session, self.engine, (SESSIONS_TABLE, MESSAGES_TABLE)):
            return None
        return self._turns

    async def check(self) -> None:
        """Fail in one line if the database cannot be reached; create the tables if it is new
        (then the sessions this store opens skip the SDK's own check for them)."""
        try:
            async with asyncio.timeout(10), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            line = describe_store_failure(exc, name=self.name, url=self._url, server="the server")
            raise StoreError(line) from None
        with store_failures(self.name, self._url, "creating its tables"):
            await self._ready()

    async def _ready(self) -> None:
        """Create the SDK's tables and our own if this is a new database.

        Once per process (the lock), and one client at a time on PostgreSQL (``SETUP_LOCK``, held
        on a connection of its own while the SDK makes its tables too): concurrent creations of
        one table fail there (turns starting together on a fresh database; 2 of 5 rounds of four
        processes checking one fresh database at once)."""
        if self._tables_ready:
            return
        async with self._tables_lock:
            if self._tables_ready:
                return
            if self.engine.dialect.name != "postgresql":
                await self._create_tables()
            else:
                async with self.engine.connect() as guard:
                    await guard.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK})
                    try:
                        await self._create_tables()
                    finally:
                        await guard.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_LOCK})
            self._tables_ready = True

    async def _create_tables(self) -> None:
        await self.open("__init__").get_items(1)  # the SDK creates its own tables on first use
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {LAST_AGENT_TABLE} (session_id VARCHAR PRIMARY KEY, "
                    "agent_name VARCHAR NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {PENDING_TABLE} (session_id VARCHAR PRIMARY KEY, "
                    "state TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} (effect_key VARCHAR PRIMARY KEY, "
                    "value TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(text(CREATE_MEMORY_TABLE_SQL))
            await conn.execute(text(CREATE_SUMMARIES_TABLE_SQL))
            await conn.execute(text(CREATE_CONVERSATIONS_TABLE_SQL))
            await conn.execute(text(CREATE_CONVERSATIONS_INDEX))

    async def list_sessions(self) -> list[SessionInfo]:
        with store_failures(self.name, self._url, "listing sessions"):
            return await self._list_sessions()

    async def _list_sessions(self) -> list[SessionInfo]:
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
        with store_failures(self.name, self._url, "deleting a session"):
            return await self._delete(session_id)

    async def _delete(self, session_id: str) -> int:
        await self._ready()
        async with self.engine.connect() as conn:
            removed = (
                await conn.execute(
                    text(f"SELECT count(*) FROM {MESSAGES_TABLE} WHERE session_id = :id"), {"id": session_id}
                )
            ).scalar_one()
        await self.open(session_id).clear_session()
        async with self.engine.begin() as conn:
            for table in (LAST_AGENT_TABLE, PENDING_TABLE, SUMMARIES_TABLE):
                await conn.execute(text(f"DELETE FROM {table} WHERE session_id = :id"), {"id": session_id})
            await conn.execute(
                text(f"DELETE FROM {CONVERSATIONS_TABLE} WHERE scope = :scope AND session_id = :id"),
                {"scope": memory_scope(session_id) or "", "id": session_id},
            )
        return int(removed)

    async def conversation_page(
        self, scope: str, limit: int, after: tuple[float, str] | None = None
    ) -> list[ConversationRow]:
        """Up to ``limit`` of ``scope``'s conversations, newest activity first, after ``after``:
        one range of the (scope, last_activity, session_id) index."""
        with store_failures(self.name, self._url, "listing conversations"):
            await self._ready()
            sql = (
                f"SELECT session_id, title, last_activity, items, tags FROM {CONVERSATIONS_TABLE} "
                "WHERE scope = :scope"
            )
            args: dict[str, Any] = {"scope": scope, "limit": limit}
            if after is not None:
                sql += " AND (last_activity, session_id) < (:when, :id)"
                args.update({"when": after[0], "id": after[1]})
            sql += " ORDER BY last_activity DESC, session_id DESC LIMIT :limit"
            async with self.engine.connect() as conn:
                rows = (await conn.execute(text(sql), args)).all()
        return [ConversationRow(r[0], r[1], float(r[2]), int(r[3]), tags_from_json(r[4])) for r in rows]

    async def set_conversation_tags(self, scope: str, session_id: str, tags: dict[str, str]) -> bool:
        """Replace the conversation's tags; False if ``scope`` has no such conversation."""
        with store_failures(self.name, self._url, "tagging a conversation"):
            await self._ready()
            async with self.engine.begin() as conn:
                done = await conn.execute(
                    text(
                        f"UPDATE {CONVERSATIONS_TABLE} SET tags = :tags "
                        "WHERE scope = :scope AND session_id = :id"
                    ),
                    {"tags": json.dumps(tags), "scope": scope, "id": session_id},
                )
        return bool(done.rowcount == 1)

    async def index_conversation(self, scope: str, row: ConversationRow) -> bool:
        """Add a conversation written before the index existed (kept as is if already there)."""
        with store_failures(self.name, self._url, "indexing a conversation"):
            await self._ready()
            async with self.engine.begin() as conn:
                done = await conn.execute(
                    text(
                        f"INSERT INTO {CONVERSATIONS_TABLE} (scope, session_id, title, last_activity, items) "
                        "VALUES (:scope, :id, :title, :when, :items) "
                        "ON CONFLICT (scope, session_id) DO NOTHING"
                    ),
                    {
                        "scope": scope,
                        "id": row.session_id,
                        "title": row.title,
                        "when": row.last_activity,
                        "items": row.items,
                    },
                )
        return bool(done.rowcount == 1)

    async def load_last_agent(self, session_id: str) -> str | None:
        with store_failures(self.name, self._url, "reading the last agent"):
            return await self._load_last_agent(session_id)

    async def _load_last_agent(self, session_id: str) -> str | None:
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
        with store_failures(self.name, self._url, "saving the last agent"):
            await self._save_last_agent(session_id, agent_name)

    async def _save_last_agent(self, session_id: str, agent_name: str) -> None:
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

    async def save_pending(self, session_id: str, state: str | None) -> None:
        await self._ready()
        async with self.engine.begin() as conn:
            await conn.execute(
                text(f"DELETE FROM {PENDING_TABLE} WHERE session_id = :id"), {"id": session_id}
            )
            if state is not None:
                await conn.execute(
                    text(f"INSERT INTO {PENDING_TABLE} (session_id, state) VALUES (:id, :state)"),
                    {"id": session_id, "state": state},
                )

    async def load_pending(self, session_id: str) -> str | None:
        await self._ready()
        async with self.engine.connect() as conn:
            value = (
                await conn.execute(
                    text(f"SELECT state FROM {PENDING_TABLE} WHERE session_id = :id"), {"id": session_id}
                )
            ).scalar_one_or_none()
        return None if value is None else str(value)

    async def list_pending(self) -> list[str]:
        await self._ready()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(f"SELECT session_id FROM {PENDING_TABLE}"))).all()
        return [str(r[0]) for r in rows]

    async def record_once(self, key: str, value: str) -> tuple[str, bool]:
        """As ``SQLiteStore.record_once``: one transaction, the key's first value kept."""
        with store_failures(self.name, self._url, "recording a side effect"):
            await self._ready()
            async with self.engine.begin() as conn:
                added = (
                    await conn.execute(
                        text(
                            f"INSERT INTO {EFFECTS_TABLE} (effect_key, value) VALUES (:key, :value) "
                            "ON CONFLICT (effect_key) DO NOTHING"
                        ),
                        {"key": key, "value": value},
                    )
                ).rowcount
                stored = (
                    await conn.execute(
                        text(f"SELECT value FROM {EFFECTS_TABLE} WHERE effect_key = :key"), {"key": key}
                    )
                ).scalar_one()
        return str(stored), added == 1

    async def list_effects(self, prefix: str = "") -> dict[str, str]:
        """What ``record_once`` recorded, by key (those starting with ``prefix``)."""
        with store_failures(self.name, self._url, "reading side effects"):
            await self._ready()
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(
                            f"SELECT effect_key, value FROM {EFFECTS_TABLE} "
                            "WHERE substr(effect_key, 1, :n) = :prefix ORDER BY created_at, effect_key"
                        ),
                        {"n": len(prefix), "prefix": prefix},
                    )
                ).all()
        return {str(k): str(v) for k, v in rows}

    async def effect_keys(self, prefix: str = "") -> list[str]:
        """The keys ``record_once`` recorded under (those starting with ``prefix``)."""
        return list(await self.list_effects(prefix))

    async def forget_effects(self, prefix: str) -> int:
        """Remove what ``record_once`` recorded under keys starting with ``prefix``."""
        with store_failures(self.name, self._url, "removing side effects"):
            await self._ready()
            async with self.engine.begin() as conn:
                removed = await conn.execute(
                    text(f"DELETE FROM {EFFECTS_TABLE} WHERE substr(effect_key, 1, :n) = :prefix"),
                    {"n": len(prefix), "prefix": prefix},
                )
        return int(removed.rowcount)

    async def summary_state(self, session_id: str) -> tuple[Summary | None, int]:
        """The session's summary, if any, and how many items it holds."""
        with store_failures(self.name, self._url, "reading a summary"):
            await self._ready()
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            f"SELECT s.summary, s.covered, (SELECT count(*) FROM {MESSAGES_TABLE} m "
                            "WHERE m.session_id = :id) FROM (SELECT 1) AS one "
                            f"LEFT JOIN {SUMMARIES_TABLE} s ON s.session_id = :id"
                        ),
                        {"id": session_id},
                    )
                ).one()
        summary = None if row[0] is None else Summary(str(row[0]), int(row[1]))
        return summary, int(row[2])

    async def save_summary(self, session_id: str, summary: Summary) -> None:
        """Keep ``summary`` for the session (outside a turn)."""
        with store_failures(self.name, self._url, "saving a summary"):
            await self._ready()
            async with self.engine.begin() as conn:
                await conn.execute(
                    text(
                        f"INSERT INTO {SUMMARIES_TABLE} (session_id, summary, covered) "
                        "VALUES (:id, :text, :n) ON CONFLICT (session_id) DO UPDATE SET "
                        "summary = excluded.summary, covered = excluded.covered, "
                        "updated_at = CURRENT_TIMESTAMP"
                    ),
                    {"id": session_id, "text": summary.text, "n": summary.covered},
                )

    async def load_memory(self, scope: str) -> dict[str, str]:
        """The facts remembered for ``scope``, by name."""
        with store_failures(self.name, self._url, "reading a user's memory"):
            await self._ready()
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        text(f"SELECT fact, value FROM {MEMORY_TABLE} WHERE scope = :scope ORDER BY fact"),
                        {"scope": scope},
                    )
                ).all()
        return {str(fact): str(value) for fact, value in rows}

    async def save_memory(self, scope: str, facts: dict[str, str]) -> None:
        """Write ``facts`` to ``scope``'s memory."""
        if not facts:
            return
        with store_failures(self.name, self._url, "writing a user's memory"):
            await self._ready()
            async with self.engine.begin() as conn:
                await conn.execute(
                    text(
                        f"INSERT INTO {MEMORY_TABLE} (scope, fact, value) VALUES (:scope, :fact, :value) "
                        "ON CONFLICT (scope, fact) DO UPDATE SET value = excluded.value, "
                        "updated_at = CURRENT_TIMESTAMP"
                    ),
                    [{"scope": scope, "fact": fact, "value": value} for fact, value in facts.items()],
                )

    async def forget_memory(self, scope: str) -> int:
        """Remove everything remembered for ``scope``; returns how many facts."""
        with store_failures(self.name, self._url, "removing a user's memory"):
            await self._ready()
            async with self.engine.begin() as conn:
                removed = await conn.execute(
                    text(f"DELETE FROM {MEMORY_TABLE} WHERE scope = :scope"), {"scope": scope}
                )
        return int(removed.rowcount)

    async def memory_scopes(self) -> dict[str, int]:
        """Every scope with remembered facts, and how many."""
        with store_failures(self.name, self._url, "listing memory"):
            await self._ready()
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(text(f"SELECT scope, count(*) FROM {MEMORY_TABLE} GROUP BY scope"))
                ).all()
        return {str(scope): int(n) for scope, n in rows}

    async def close(self) -> None:
        if self._turns is not None:
            await self._turns.close()
        await self.engine.dispose()


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(stamp, datetime)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
