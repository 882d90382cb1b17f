"""Sessions in Redis: the SDK's ``RedisSession`` over one shared client, plus the inventory.

The SDK's keys are ``<prefix>:<session id>`` (a hash: created_at, updated_at),
``<prefix>:<session id>:messages`` (a list) and ``<prefix>:<session id>:counter``. Ours, the
last agent, is ``<prefix>/last_agent/<session id>``: the ``/`` after the prefix puts it where no
session id can reach (``victim:last_agent`` is a session like any other). Ids ending in
``:messages`` or ``:counter`` are refused: their hash would be another session's list.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from agents.memory import Session

from multisessions.errors import ConfigError, StoreError
from multisessions.naming import memory_scope
from multisessions.sdk_private import plain_redis_session
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
from multisessions.stores.leases import RedisLeases
from multisessions.stores.redis_turns import RedisTurnIO, conversation_key, conversations_key, memory_key
from multisessions.stores.urls import INSTALL_HINT, redact_url, scrub, split_options

DEFAULT_KEY_PREFIX = "multi_sessions"
MAX_TTL = 10 * 365 * 24 * 3600
"""The longest ``?ttl=`` taken: ten years, in seconds (Redis itself overflows far above)."""
_SDK_SUFFIXES = (":messages", ":counter")


def parse_ttl(value: str) -> int:
    """``?ttl=``: a whole number of seconds from 1 to ``MAX_TTL``, else ``ConfigError`` (exit 2).

    A ttl of 0 or less makes Redis drop each write as it lands: every turn would "succeed" and
    keep nothing.
    """
    if not re.fullmatch(r"[0-9]{1,12}", value) or not 1 <= int(value) <= MAX_TTL:
        raise ConfigError(
            f"ttl={value!r} in the Redis URL must be a whole number of seconds from 1 to {MAX_TTL:,}"
        )
    return int(value)


MAX_DB = 2**31 - 1
"""A Redis database number is a 32-bit signed int; the server says when it has fewer."""


def check_db(driver_url: str, shown: str) -> None:
    """The database number in ``redis://host/N`` (or ``?db=N``): digits, in range, else ``ConfigError``.

    redis-py reads ``/l5`` as no number at all and silently uses db 0: another app's keys."""
    parts = urlsplit(driver_url)
    found = []
    if "@" in parts.path:  # a password with an unescaped "/": check() names that likely cause
        return
    if parts.scheme in ("redis", "rediss") and parts.path.strip("/"):
        found.append(parts.path.strip("/"))
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "db"]
    for value in found:
        if not re.fullmatch(r"[0-9]{1,10}", value) or int(value) > MAX_DB:
            raise ConfigError(
                f"{shown}: the database {value!r} must be a number from 0 to {MAX_DB} "
                "(redis://host:6379/15; most servers have 0-15)"
            )


def glob_literal(text: str) -> str:
    """``text`` matched literally in a Redis ``SCAN MATCH``/``KEYS`` pattern (``*?[]\\`` escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class RedisStore:
    """Sessions in Redis: one shared client, keys ``<prefix>:<session id>[:messages]``."""

    def __init__(self, url: str) -> None:
        try:
            import redis.asyncio as redis
            from agents.extensions.memory import RedisSession
        except ImportError:
            raise StoreError(f"{redact_url(url)} needs the Redis driver; {INSTALL_HINT}") from None
        self._session_class = RedisSession
        self._url = url  # kept only to scrub its secrets from driver errors
        try:
            driver_url, options = split_options(url, ("key_prefix", "ttl"))
        except ValueError as exc:
            raise ConfigError(f"{redact_url(url)} is not a valid URL ({scrub(str(exc), url)})") from None
        self.key_prefix = options.get("key_prefix", DEFAULT_KEY_PREFIX)
        if not self.key_prefix or re.search(r"[:/\s]", self.key_prefix):
            # "p:acme" + "user_a" is the key of "p" + "acme:user_a": another prefix's tenant.
            raise ConfigError(
                f"key_prefix={self.key_prefix!r} in {redact_url(url)} must be non-empty, without ':', '/' "
                "or spaces: such a prefix's keys would be another prefix's sessions"
            )
        self.ttl = parse_ttl(options["ttl"]) if "ttl" in options else None
        self.name = f"Redis {redact_url(url)} (prefix {self.key_prefix})"
        check_db(driver_url, redact_url(url))
        try:
            # A blocking pool: past 32 connections a command waits for one instead of failing
            # with "Too many connections" (it did under load); it also bounds descriptors.
            pool = redis.BlockingConnectionPool.from_url(driver_url, max_connections=32, timeout=30)
        except Exception as exc:
            raise ConfigError(f"{self.name}: redis-py refuses the URL ({scrub(str(exc), url)})") from None
        self.client: Any = redis.Redis(connection_pool=pool)
        # One lease backend for both paths: the same keys, and one ``seconds`` to tune.
        self._turn_io = RedisTurnIO(self.client, self.key_prefix, self._pending_key(), self.ttl)
        self.leases: RedisLeases = self._turn_io
        # A client that decodes replies (?decode_responses=true) hands the scripts text, not the
        # bytes they frame: its sessions keep the SDK's own path.
        self._decodes = bool(pool.connection_kwargs.get("decode_responses"))

    def _checked(self, session_id: str) -> str:
        if session_id.endswith(_SDK_SUFFIXES):
            raise StoreError(
                f"session id {session_id!r} ends in {session_id[session_id.rfind(':') :]!r}: on Redis its "
                "keys would be another session's; choose another id"
            )
        return session_id

    def open(self, session_id: str) -> Session:
        session = self._session_class(
            self._checked(session_id), redis_client=self.client, key_prefix=self.key_prefix, ttl=self.ttl
        )
        return remember_store(session, self)

    def turn_io(self, session: Session) -> TurnIO | None:
        """Two round trips a turn (redis_turns.py) for a session this store would open itself.

        Only then do its scripts write what the session would: a subclass may serialize or key
        differently, another client, prefix or ttl writes elsewhere or expires otherwise."""
        if type(session) is not self._session_class:
            return None
        own: dict[str, Any] = vars(session)
        session_id = own.get("session_id")
        if not isinstance(session_id, str):
            return None
        try:
            self._checked(session_id)
        except StoreError:
            return None
        session_key = f"{self.key_prefix}:{session_id}"
        plain = not self._decodes and plain_redis_session(
            session,
            {
                "_redis": self.client,
                "_key_prefix": self.key_prefix,
                "_ttl": self.ttl,
                "_closed": False,
                "_session_key": session_key,
                "_messages_key": f"{session_key}:messages",
                "_counter_key": f"{session_key}:counter",
            },
        )
        return self._turn_io if plain else None

    async def check(self) -> None:
        """Fail in one line if the server cannot be reached."""
        try:
            await asyncio.wait_for(self.client.ping(), 5)
        except Exception as exc:
            line = describe_store_failure(exc, name=self.name, url=self._url, server="Redis")
            raise StoreError(f"{line}{_escape_hint(self._url)}") from None

    def _last_agent_key(self, session_id: str) -> str:
        return self._turn_io.agent_key_prefix + self._checked(session_id)

    async def list_sessions(self) -> list[SessionInfo]:
        with store_failures(self.name, self._url, "listing sessions"):
            return await self._list_sessions()

    async def _list_sessions(self) -> list[SessionInfo]:
        rows = []
        # The prefix is a literal: "attac?" must not list prefix "attack"'s sessions.
        pattern = f"{glob_literal(self.key_prefix)}:*"
        async for key in self.client.scan_iter(match=pattern, count=500, _type="hash"):
            meta = {k.decode(): v.decode() for k, v in (await self.client.hgetall(key)).items()}
            # Only a session of this prefix: "<prefix>:x:<id>" is prefix "<prefix>:x"'s.
            if "session_id" not in meta or key.decode() != f"{self.key_prefix}:{meta['session_id']}":
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
        with store_failures(self.name, self._url, f"deleting {session_id!r}"):
            removed = await self.client.llen(f"{self.key_prefix}:{session_id}:messages")
            await session.clear_session()
            await self.client.delete(
                self._last_agent_key(session_id),
                self._turn_io.receipt_key(session_id),
                self._turn_io.summary_key(session_id),
                conversation_key(self.key_prefix, session_id),
            )
            await self.client.zrem(
                conversations_key(self.key_prefix, memory_scope(session_id) or ""), session_id
            )
            await self.client.hdel(self._pending_key(), session_id)
        return int(removed)

    async def conversation_page(
        self, scope: str, limit: int, after: tuple[float, str] | None = None
    ) -> list[ConversationRow]:
        """Up to ``limit`` of ``scope``'s conversations, newest activity first, after ``after``:
        a range of the user's sorted set, then their entries in one pipeline."""
        key = conversations_key(self.key_prefix, scope)
        top = "+inf" if after is None else repr(after[0])
        found: list[tuple[str, float]] = []
        skip = 0
        with store_failures(self.name, self._url, "listing conversations"):
            while len(found) < limit:
                batch = limit - len(found)
                rows = await self.client.zrevrangebyscore(
                    key, top, "-inf", start=skip, num=batch, withscores=True
                )
                for member, score in rows:
                    session_id = _text(member)
                    # Ties on the score: only ids before the cursor's (keyset order: score, then id).
                    if after is not None and score == after[0] and session_id >= after[1]:
                        continue
                    found.append((session_id, float(score)))
                if len(rows) < batch:
                    break
                skip += len(rows)
            pipe = self.client.pipeline(transaction=False)
            for session_id, _ in found:
                pipe.hmget(conversation_key(self.key_prefix, session_id), "title", "items", "tags")
            entries = await pipe.execute() if found else []
        page = []
        for (session_id, score), (title, items, tags) in zip(found, entries, strict=True):
            if items is None:  # its session expired (a ttl): the entry went with it
                continue
            page.append(
                ConversationRow(
                    session_id,
                    _text(title or b""),
                    score,
                    int(items),
                    tags_from_json(_text(tags or b"{}")),
                )
            )
        return page

    async def set_conversation_tags(self, scope: str, session_id: str, tags: dict[str, str]) -> bool:
        """Replace the conversation's tags; False if ``scope`` has no such conversation."""
        with store_failures(self.name, self._url, "tagging a conversation"):
            if await self.client.zscore(conversations_key(self.key_prefix, scope), session_id) is None:
                return False
            await self.client.hset(conversation_key(self.key_prefix, session_id), "tags", json.dumps(tags))
        return True

    async def index_conversation(self, scope: str, row: ConversationRow) -> bool:
        """Add a conversation written before the index existed (kept as is if already there)."""
        with store_failures(self.name, self._url, "indexing a conversation"):
            added = await self.client.zadd(
                conversations_key(self.key_prefix, scope), {row.session_id: row.last_activity}, nx=True
            )
            if added:
                await self.client.hset(
                    conversation_key(self.key_prefix, row.session_id),
                    mapping={"title": row.title, "items": row.items},
                )
        return bool(added)

    async def load_last_agent(self, session_id: str) -> str | None:
        key = self._last_agent_key(session_id)
        with store_failures(self.name, self._url, "reading the last agent"):
            value = await self.client.get(key)
        return value.decode() if value is not None else None

    async def save_last_agent(self, session_id: str, agent_name: str) -> None:
        key = self._last_agent_key(session_id)
        with store_failures(self.name, self._url, "saving the last agent"):
            await self.client.set(key, agent_name, ex=self.ttl)

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

    def _effects_key(self) -> str:
        return f"{self.key_prefix}/effects"

    async def record_once(self, key: str, value: str) -> tuple[str, bool]:
        """As ``SQLiteStore.record_once``: one ``HSETNX`` in our own namespace."""
        with store_failures(self.name, self._url, "recording a side effect"):
            added = await self.client.hsetnx(self._effects_key(), key, value)
            stored = await self.client.hget(self._effects_key(), key)
        return bytes(stored).decode(), bool(added)

    async def list_effects(self, prefix: str = "") -> dict[str, str]:
        """What ``record_once`` recorded, by key (those starting with ``prefix``)."""
        with store_failures(self.name, self._url, "reading side effects"):
            found = await self.client.hgetall(self._effects_key())
        effects = {bytes(k).decode(): bytes(v).decode() for k, v in found.items()}
        return {k: v for k, v in sorted(effects.items()) if k.startswith(prefix)}

    async def effect_keys(self, prefix: str = "") -> list[str]:
        """The keys ``record_once`` recorded under (those starting with ``prefix``)."""
        return list(await self.list_effects(prefix))

    async def forget_effects(self, prefix: str) -> int:
        """Remove what ``record_once`` recorded under keys starting with ``prefix``."""
        with store_failures(self.name, self._url, "removing side effects"):
            keys = [
                k
                for k in await self.client.hkeys(self._effects_key())
                if bytes(k).decode().startswith(prefix)
            ]
            return int(await self.client.hdel(self._effects_key(), *keys)) if keys else 0

    async def summary_state(self, session_id: str) -> tuple[Summary | None, int]:
        """The session's summary, if any, and how many items it holds (one pipeline)."""
        with store_failures(self.name, self._url, "reading a summary"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self._turn_io.summary_key(self._checked(session_id)))
            pipe.llen(f"{self.key_prefix}:{session_id}:messages")
            found, count = await pipe.execute()
        if not found:
            return None, int(count)
        return Summary(bytes(found[b"text"]).decode(), int(found[b"covered"])), int(count)

    async def save_summary(self, session_id: str, summary: Summary) -> None:
        """Keep ``summary`` for the session (outside a turn)."""
        with store_failures(self.name, self._url, "saving a summary"):
            await self.client.hset(
                self._turn_io.summary_key(self._checked(session_id)),
                mapping={"text": summary.text, "covered": summary.covered},
            )

    async def load_memory(self, scope: str) -> dict[str, str]:
        """The facts remembered for ``scope``, by name."""
        with store_failures(self.name, self._url, "reading a user's memory"):
            found = await self.client.hgetall(memory_key(self.key_prefix, scope))
        return {bytes(k).decode(): bytes(v).decode() for k, v in sorted(found.items())}

    async def save_memory(self, scope: str, facts: dict[str, str]) -> None:
        """Write ``facts`` to ``scope``'s memory."""
        if facts:
            with store_failures(self.name, self._url, "writing a user's memory"):
                await self.client.hset(memory_key(self.key_prefix, scope), mapping=facts)

    async def forget_memory(self, scope: str) -> int:
        """Remove everything remembered for ``scope``; returns how many facts."""
        key = memory_key(self.key_prefix, scope)
        with store_failures(self.name, self._url, "removing a user's memory"):
            count = int(await self.client.hlen(key))
            await self.client.delete(key)
        return count

    async def memory_scopes(self) -> dict[str, int]:
        """Every scope with remembered facts, and how many."""
        start = memory_key(self.key_prefix, "")
        scopes: dict[str, int] = {}
        with store_failures(self.name, self._url, "listing memory"):
            async for key in self.client.scan_iter(match=_glob_literal(start) + "*", count=500, _type="hash"):
                name = bytes(key).decode()
                if name.startswith(start):
                    scopes[name[len(start) :]] = int(await self.client.hlen(key))
        return scopes

    async def close(self) -> None:
        await self.client.aclose()


def _glob_literal(text: str) -> str:
    """``text`` matched literally in a SCAN pattern (its ``*?[]\\`` escaped)."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _escape_hint(url: str) -> str:
    """A hint when the password holds a character that ends it early for redis-py's parser."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    if any(ch in userinfo for ch in "/?#@"):
        return " (percent-encode / ? # @ in the user info before the host: redis-py cut it short)"
    return ""


def _epoch(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _text(value: bytes | str) -> str:
    """A reply as text, whether the client decodes replies (``?decode_responses=true``) or not."""
    return value.decode() if isinstance(value, bytes) else value
