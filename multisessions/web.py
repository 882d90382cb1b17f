"""What serve.py needs from HTTP that a reader need not learn first.

Server-sent event framing, a
session's history as rows for a page, telling store failures from model failures (and what a
client may be told of each), a JSON nesting limit, the page's security headers, an ASGI wrapper
that reports a failed startup in one line instead of a traceback, and uvicorn's HTTP protocol
with a deadline for a request's headers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import openai

from multisessions.errors import AnswerTooLong, AwaitingApproval, ModelTimeout
from multisessions.items import handoff_target, message_text
from multisessions.observers import is_store_failure as is_store_failure  # re-exported for serve.py

try:
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # serve.py says which package is missing; nothing else here needs uvicorn
    H11Protocol = None  # type: ignore[assignment,misc]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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


# --- Request bodies ---------------------------------------------------------------------------

MAX_JSON_DEPTH = 32
"""The deepest nesting a request body may have: ``{"message": "..."}`` needs 1."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body``'s JSON nests deeper than ``limit``, checked before parsing it: Python's
    parser recurses once per level, and ``[`` x 10,000 raised ``RecursionError`` (a 500)."""
    depth = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False


# --- What a client is told when a turn fails --------------------------------------------------


def client_failure(exc: BaseException) -> tuple[int, str]:
    """The status and one line a client is told of a failed model call or paused session: the
    kind of failure and what to do, never the model server's address or its words (the server
    log has those)."""
    nothing = "nothing was saved"
    if isinstance(exc, AwaitingApproval):
        return 409, (
            "this conversation waits for a supervisor to approve or reject a tool call; "
            f"{nothing}: send it again once that is decided"
        )
    if isinstance(exc, ModelTimeout | openai.APITimeoutError):
        return 504, f"the model took too long to answer; {nothing}: retry later"
    if isinstance(exc, AnswerTooLong):
        return 502, f"the model's answer was longer than this server keeps; {nothing}: ask for a shorter one"
    if isinstance(exc, openai.RateLimitError):
        return 503, f"the model server is rate limiting this service; {nothing}: retry in a minute"
    if isinstance(exc, openai.APIConnectionError):
        return 502, f"the model server cannot be reached; {nothing}: retry later"
    if isinstance(exc, openai.APIStatusError) and exc.status_code >= 500:
        return 502, f"the model server failed (HTTP {exc.status_code}); {nothing}: retry later"
    if isinstance(exc, openai.APIStatusError):
        return 502, (
            f"the model server refused the request (HTTP {exc.status_code}); {nothing}: "
            "tell the operator (the server log says why)"
        )
    return 502, f"the model failed ({type(exc).__name__}); {nothing}: retry later, or tell the operator"


# --- The page's headers -----------------------------------------------------------------------


def page_headers(page: str) -> dict[str, str]:
    """Security headers for ``page``: a Content-Security-Policy allowing only its own inline
    script and style (by hash) and requests to this server, and no framing by any site."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
        )

    policy = (
        f"default-src 'none'; script-src {hashes('script') or chr(39) + 'none' + chr(39)}; "
        f"style-src {hashes('style') or chr(39) + 'none' + chr(39)}; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


# --- uvicorn: a deadline for a request's headers ----------------------------------------------

HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send a request's headers (uvicorn has no such setting:
its keep-alive timeout starts only after a response, and any byte received stops it)."""

if H11Protocol is not None:

    class HeaderTimeoutProtocol(H11Protocol):
        """uvicorn's h11 protocol, closing a connection that has not sent a whole request's
        headers within ``HEADER_TIMEOUT`` of connecting or of its last response. 1,500 connections
        sending a header line every 5 s stayed open otherwise, each holding a descriptor.

        Uses uvicorn's ``cycle``, ``transport`` and ``loop`` (kept here, in one place)."""

        header_timeout = HEADER_TIMEOUT
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

        def _too_slow(self) -> None:
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                self.transport.close()
