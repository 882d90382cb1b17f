"""Where each store keeps its leases (see locks.py): a table or keys of our own, beside the SDK's.

Lease names live in a namespace no session id can reach: a separate table on SQLite and
PostgreSQL, keys starting ``<prefix>/lease/`` on Redis (the SDK's keys are ``<prefix>:<id>...``).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from multisessions.locks import LEASE_SECONDS


def text(sql: str) -> Any:
    """SQLAlchemy's ``text(sql)``. SQLAlchemy is loaded by then (``SQLStore`` imported it to make
    its engine), so no command pays its slow import at start-up, the SQLite default included."""
    return sys.modules["sqlalchemy"].text(sql)


LEASES_TABLE = "multisessions_leases"
SETUP_LOCK = 0x6D756C7469
"""The advisory lock (any constant key) under which one PostgreSQL client at a time creates our
tables and functions: concurrent ``CREATE TABLE IF NOT EXISTS`` of one table can fail there with a
unique violation in the catalog (``pg_type_typname_nsp_index``)."""


# Owner-checked, in one step on the server: never extend or free a lease another turn took.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class RedisLeases:
    """Leases as Redis keys with an expiry: ``SET NX PX`` to take, owner-checked scripts to renew and free."""

    def __init__(self, client: Any, key_prefix: str, seconds: float = LEASE_SECONDS) -> None:
        self.seconds = seconds
        self.client = client
        self.key_prefix = key_prefix

    def _key(self, session_id: str) -> str:
        return f"{self.key_prefix}/lease/{session_id}"

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        return bool(await self.client.set(self._key(session_id), owner, nx=True, px=int(seconds * 1000)))

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        return bool(await self.client.eval(_RENEW, 1, self._key(session_id), owner, int(seconds * 1000)))

    async def release(self, session_id: str, owner: str) -> None:
        await self.client.eval(_RELEASE, 1, self._key(session_id), owner)


class SQLLeases:
    """Leases in a table of the database. On PostgreSQL expiry is by the server's clock, shared by
    every machine; on a SQLite file (``sqlite+aiosqlite``), which only this machine reaches, by its clock."""

    def __init__(self, engine: Any, seconds: float = LEASE_SECONDS) -> None:
        self.seconds = seconds
        self.engine = engine
        self._ready = False
        self._creating = asyncio.Lock()
        postgres = engine.dialect.name == "postgresql"
        self._now = "now()" if postgres else ":now"
        self._until = "now() + make_interval(secs => :s)" if postgres else ":now + :s"
        self._stamp = "TIMESTAMPTZ" if postgres else "REAL"
        self._postgres = postgres

    async def _create_table(self) -> None:
        """Create the leases table once per process, one client at a time: on a fresh PostgreSQL
        database, turns starting together each creating it failed the first turns (the unique
        violation ``SETUP_LOCK`` tells of)."""
        async with self._creating:
            if self._ready:
                return
            async with self.engine.begin() as conn:
                if self._postgres:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SETUP_LOCK})
                await conn.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {LEASES_TABLE} (session_id VARCHAR PRIMARY KEY, "
                        f"owner VARCHAR NOT NULL, expires {self._stamp} NOT NULL)"
                    )
                )
            self._ready = True

    async def _execute(self, sql: str, params: dict[str, Any]) -> int:
        if not self._ready:
            await self._create_table()
        async with self.engine.begin() as conn:
            clock = {} if self._postgres else {"now": time.time()}
            result = await conn.execute(text(sql), params | clock)
            return int(result.rowcount)

    async def try_acquire(self, session_id: str, owner: str, seconds: float) -> bool:
        taken = await self._execute(
            f"INSERT INTO {LEASES_TABLE} (session_id, owner, expires) "
            f"VALUES (:id, :owner, {self._until}) "
            "ON CONFLICT (session_id) DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
            f"WHERE {LEASES_TABLE}.expires < {self._now}",
            {"id": session_id, "owner": owner, "s": seconds},
        )
        return taken == 1

    async def renew(self, session_id: str, owner: str, seconds: float) -> bool:
        renewed = await self._execute(
            f"UPDATE {LEASES_TABLE} SET expires = {self._until} WHERE session_id = :id AND owner = :owner",
            {"id": session_id, "owner": owner, "s": seconds},
        )
        return renewed == 1

    async def release(self, session_id: str, owner: str) -> None:
        await self._execute(
            f"DELETE FROM {LEASES_TABLE} WHERE session_id = :id AND owner = :owner",
            {"id": session_id, "owner": owner},
        )
