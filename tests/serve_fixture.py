"""Shared by the serve tests: an app on a store with known users, and an HTTP client into it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from agents.models.interface import Model

from multisessions import Settings, SQLiteStore
from multisessions.settings import ServeToken
from serve import create_app

TOKENS = {
    "alice": "alice-token-0123456789abcdef",
    "bob": "bob-token-0123456789abcdef",
    "acme/alice": "acme-alice-token-0123456789ab",
}
"""Two users, and a second Alice in tenant acme: same user name, another tenant, another person."""


def serve_tokens(tokens: dict[str, str] = TOKENS) -> tuple[ServeToken, ...]:
    entries = []
    for who, token in tokens.items():
        tenant, _, user = who.rpartition("/")
        entries.append(ServeToken(user, tenant or None, token))
    return tuple(entries)


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@asynccontextmanager
async def serving(
    db: Path,
    *,
    rate: int = 0,
    model: Model | None = None,
    store_url: str | None = None,
    **more: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app, started (its lifespan run) on ``db``, and an in-process client into it; ``more``
    settings (``encryption_key=...``) as the environment would give them."""
    settings = Settings(serve_tokens=serve_tokens(), serve_rate=rate, store_url=store_url, **more)
    app = create_app(settings, db_path=db, model=model)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def events_of(body: str) -> list[tuple[str, Any]]:
    """Server-sent events as (event, data) pairs."""
    found = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines.get("data", "null"))))
    return found


async def stored(db: Path) -> dict[str, list[Any]]:
    """Everything the SQLite file holds: each session id and its items, read with the SDK."""
    store = SQLiteStore(db)
    result: dict[str, list[Any]] = {}
    if not db.exists():
        return result
    for row in await store.list_sessions():
        session = store.open(row.session_id)
        result[row.session_id] = await session.get_items()
        session.close()  # type: ignore[attr-defined]
    return result
