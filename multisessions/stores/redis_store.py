"""Sessions in Redis: the SDK's ``RedisSession`` over one shared client, plus the inventory.

Keys are ``<prefix>:<session id>`` (a hash the SDK keeps: created_at, updated_at) and
``<prefix>:<session id>:messages`` (a list); ``<prefix>:<session id>:last_agent`` is ours.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from agents.memory import Session

from multisessions.errors import StoreError
from multisessions.stores.base import SessionInfo, remember_store
from multisessions.stores.leases import RedisLeases
from multisessions.stores.urls import INSTALL_HINT, redact_url, split_options

DEFAULT_KEY_PREFIX = "multi_sessions"


class RedisStore:
    """Sessions in Redis: one shared client, keys ``<prefix>:<session id>[:messages]``."""

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as redis
            from agents.extensions.memory import RedisSession
        except ImportError:
            raise StoreError(f"{redact_url(url)} needs the Redis driver; {INSTALL_HINT}") from None
        self._session_class = RedisSession
        url, options = split_options(url, ("key_prefix", "ttl"))
        # A blocking pool: past 32 connections a command waits for one instead of failing
        # with "Too many connections" (it did at 1,000 users); it also bounds descriptors.
        pool = redis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=30)
        self.client: Any = redis.Redis(connection_pool=pool)
        self.key_prefix = options.get("key_prefix", DEFAULT_KEY_PREFIX)
        try:
            self.ttl = int(options["ttl"]) if "ttl" in options else None
        except ValueError:
            raise StoreError(f"ttl={options['ttl']!r} in the Redis URL must be whole seconds") from None
        self.name = f"Redis {redact_url(url)} (prefix {self.key_prefix})"
        self.leases = RedisLeases(self.client, self.key_prefix)

    def open(self, session_id: str) -> Session:
        session = self._session_class(
            session_id, redis_client=self.client, key_prefix=self.key_prefix, ttl=self.ttl
        )
        return remember_store(session, self)

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
        await self.client.hdel(self._pending_key(), session_id)
        return int(removed)

    async def load_last_agent(self, session_id: str) -> str | None:
        value = await self.client.get(self._last_agent_key(session_id))
        return value.decode() if value is not None else None

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        await self.client.set(self._last_agent_key(session_id), agent_name, ex=self.ttl)

    def _pending_key(self) -> str:
        # Our own namespace: "<prefix>/...", where the SDK's keys are "<prefix>:<id>...".
        return f"{self.key_prefix}/pending"

    async def save_pending(self, session_id: str, state: str | None) -> None:
        if state is None:
            await self.client.hdel(self._pending_key(), session_id)
        else:
            await self.client.hset(self._pending_key(), session_id, state)

    async def load_pending(self, session_id: str) -> str | None:
        value = await self.client.hget(self._pending_key(), session_id)
        return None if value is None else bytes(value).decode()

    async def list_pending(self) -> list[str]:
        return [bytes(key).decode() for key in await self.client.hkeys(self._pending_key())]

    async def close(self) -> None:
        await self.client.aclose()


def _epoch(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None
