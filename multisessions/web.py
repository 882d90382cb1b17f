"""What serve.py needs from HTTP that a reader need not learn first.

A per-user rate limit (a token bucket in each worker process), server-sent event framing, a
session's history as rows for a page, telling store failures from model failures, and an ASGI
wrapper that reports a failed startup in one line instead of a traceback.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from multisessions.errors import StoreError
from multisessions.items import handoff_target, message_text

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key: ``per_minute`` turns a minute, in bursts of up to ``per_minute``.

    It lives in one process: with several workers each keeps its own buckets, so a user may get
    up to ``workers x per_minute`` turns a minute. ``per_minute=0`` lets everything through.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: dict[Any, _Bucket] = {}

    def take(self, key: Any) -> float:
        """Take one turn for ``key``: 0.0 if allowed, else the seconds to wait before the next."""
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


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def sse(event: str, data: Any) -> bytes:
    """One server-sent event: ``event: NAME`` and its data as one line of JSON."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def history_entries(items: list[Any], first_agent: str) -> list[dict[str, str | None]]:
    """A session's history as rows ``{role, text, agent}``: messages, and each handoff as its own row.

    Stored items do not say which agent wrote them; a conversation starts with ``first_agent``
    and moves to another agent at each handoff.
    """
    rows: list[dict[str, str | None]] = []
    agent = first_agent
    for item in items:
        if not isinstance(item, dict):
            continue
        target = handoff_target(item)
        if target is not None:
            rows.append({"role": "handoff", "text": f"{agent} -> {target}", "agent": target})
            agent = target
        elif item.get("role") == "user":
            rows.append({"role": "user", "text": message_text(item), "agent": None})
        elif item.get("role") == "assistant":
            rows.append({"role": "assistant", "text": message_text(item), "agent": agent})
    return rows


_STORE_MODULES = ("sqlite3", "redis", "sqlalchemy", "asyncpg", "aiosqlite")


def is_store_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came from the store (database, Redis) rather than from the model."""
    if isinstance(exc, StoreError | sqlite3.Error):
        return True
    return any(type(exc).__module__.split(".")[0] == name for name in _STORE_MODULES)


class OneLineStartupErrors:
    """Wraps an ASGI app so a failed startup is logged as the error's one line, not a traceback.

    uvicorn logs the message of ``lifespan.startup.failed``; Starlette puts a whole traceback
    there. A setting or store error already says what is wrong and what to do in one line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_one_line(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                lines = [line for line in str(message.get("message", "")).splitlines() if line.strip()]
                last = lines[-1] if lines else "startup failed"
                # "multisessions.errors.ConfigError: SERVE_TOKENS ..." -> "error: SERVE_TOKENS ..."
                message = {**message, "message": "error: " + last.split(": ", 1)[-1]}
            await send(message)

        await self.app(scope, receive, send_one_line)
