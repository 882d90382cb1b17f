"""A user's conversations to browse: titles, last activity, tags, newest first, a page at a time.

Each store that writes turns in one step (SQLite, Redis) keeps an index per user (tenant and
user, ``naming.user_scope``), updated in the same write as the turn's items: the title (the
first user message, cut to one line), the time of the last turn, the item count. A page is one
range of that index after an opaque cursor (keyset paging): its cost depends neither on how
many other sessions the store holds nor on how far down the list the page is.

The title filter (``title=``) is applied to the user's own conversations page by page: a call
reads at most ``MAX_SCANNED`` index rows, so a filter that matches little returns a short page
with a cursor to go on, never a scan of the store. A store without the index (PostgreSQL,
a session class without the one-write path) is listed by scanning its inventory instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from multisessions.inventory import list_sessions
from multisessions.items import read_all, title_of
from multisessions.naming import check_tenant, memory_scope, parse_session_id, user_scope, user_session_id
from multisessions.stores import SessionStore
from multisessions.stores.base import ConversationRow

MAX_LIMIT = 100
"""The most conversations one page holds (a larger ``limit`` is capped)."""
MAX_SCANNED = 500
"""The most index rows one filtered call reads before it answers (with a cursor to go on)."""


@dataclass(frozen=True)
class Conversation:
    """One conversation in a listing."""

    session_id: str
    title: str
    last_activity: datetime | None
    items: int
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationPage:
    """A page of conversations, newest activity first; ``next_cursor`` is None on the last page."""

    conversations: list[Conversation]
    next_cursor: str | None


def has_index(store: SessionStore) -> bool:
    """Whether ``store`` keeps the per-user index (else listing scans its inventory)."""
    inner = getattr(store, "store", None)  # a wrapper (encrypted) has it if what it wraps has it
    if inner is not None and not has_index(inner):
        return False
    return callable(getattr(store, "conversation_page", None))


def _encode(row: ConversationRow) -> str:
    return encode_position(row.last_activity, row.session_id)


def encode_position(last_activity: float, session_id: str) -> str:
    """An opaque cursor for the place after (``last_activity``, ``session_id``) in a listing."""
    raw = json.dumps([last_activity, session_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(cursor: str, scope: str) -> tuple[float, str]:
    """The position a cursor names, which must be in ``scope``: a cursor only moves along the
    caller's own list (the query is always bound to the caller's scope as well)."""
    when, session_id = decode_position(cursor)
    if memory_scope(session_id) != scope:
        raise ValueError("cursor is not one this listing gave")
    return when, session_id


def decode_position(cursor: str) -> tuple[float, str]:
    """The place ``encode_position`` made a cursor for; ``ValueError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, session_id = json.loads(raw)
        if isinstance(when, bool) or not isinstance(when, int | float) or not isinstance(session_id, str):
            raise ValueError
    except (ValueError, binascii.Error, TypeError):
        raise ValueError("cursor is not one this listing gave") from None
    return float(when), session_id


def _conversation(row: ConversationRow) -> Conversation:
    return Conversation(
        row.session_id, row.title, datetime.fromtimestamp(row.last_activity, UTC), row.items, dict(row.tags)
    )


async def list_conversations(
    store: SessionStore,
    user: str,
    *,
    tenant: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
    title: str | None = None,
) -> ConversationPage:
    """``user``'s conversations in ``tenant``, most recently active first, ``limit`` (at most
    ``MAX_LIMIT``) per page; ``cursor`` is the previous page's ``next_cursor``; ``title`` keeps
    the conversations whose title contains it (case-insensitive). A bad user, tenant or cursor
    raises ``ValueError``."""
    if tenant is not None:
        check_tenant(tenant)
    user_session_id(user)  # the same checks as the ids it lists
    if limit < 1:
        raise ValueError("limit must be at least 1")
    limit = min(limit, MAX_LIMIT)
    scope = user_scope(user, tenant)
    after = None if cursor is None else _decode(cursor, scope)
    needle = (title or "").casefold()
    if not has_index(store):
        rows = await _scanned(store, user, tenant)
        return _page_of(rows, limit, after, needle)
    if not needle:
        # One more than the page: the last page says it is the last (no empty page after it).
        rows = await store.conversation_page(scope, limit + 1, after)  # type: ignore[attr-defined]
        cursor = _encode(rows[limit - 1]) if len(rows) > limit else None
        return ConversationPage([_conversation(r) for r in rows[:limit]], cursor)
    found: list[ConversationRow] = []
    scanned = 0
    while True:
        batch = min(MAX_SCANNED - scanned, max(limit, 50))
        rows = await store.conversation_page(scope, batch, after)  # type: ignore[attr-defined]
        for row in rows:
            after = (row.last_activity, row.session_id)
            scanned += 1
            if needle in row.title.casefold():
                found.append(row)
                if len(found) == limit:
                    return ConversationPage([_conversation(r) for r in found], _encode(row))
        if len(rows) < batch:
            return ConversationPage([_conversation(r) for r in found], None)
        if (
            scanned >= MAX_SCANNED and after is not None
        ):  # a short page: the filter's cost stays bounded per call
            return ConversationPage([_conversation(r) for r in found], encode_position(*after))


def _page_of(
    rows: list[ConversationRow], limit: int, after: tuple[float, str] | None, needle: str
) -> ConversationPage:
    """A page of rows already in memory (a store without the index), by the same rules."""
    rows = sorted(rows, key=lambda r: (r.last_activity, r.session_id), reverse=True)
    if after is not None:
        rows = [r for r in rows if (r.last_activity, r.session_id) < after]
    rows = [r for r in rows if needle in r.title.casefold()]
    page = rows[:limit]
    more = len(rows) > limit
    return ConversationPage([_conversation(r) for r in page], _encode(page[-1]) if more else None)


async def _scanned(store: SessionStore, user: str, tenant: str | None) -> list[ConversationRow]:
    rows = []
    for info in await list_sessions(store, tenant=tenant, user=user):
        when = info.last_activity or info.created
        rows.append(ConversationRow(info.session_id, "", when.timestamp() if when else 0.0, info.items))
    return rows


async def set_tags(store: SessionStore, session_id: str, tags: dict[str, str]) -> bool:
    """Replace the tags of a conversation (the app's metadata, stored as given: plaintext even
    on an encrypted store); False if the index holds no such conversation yet."""
    scope = memory_scope(session_id)
    if scope is None or not has_index(store):
        return False
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise ValueError("tags are names and values, both text")
    return bool(await store.set_conversation_tags(scope, session_id, dict(tags)))  # type: ignore[attr-defined]


async def backfill_conversations(store: SessionStore) -> int:
    """Index the sessions written before the index existed (title from their first message):
    reads every session once, for the operator; returns how many were added."""
    if not has_index(store):
        return 0
    added = 0
    for info in await store.list_sessions():
        scope = memory_scope(info.session_id)
        if scope is None or parse_session_id(info.session_id).user is None:
            continue
        reader: Any = getattr(store, "open_read_only", store.open)
        items = await read_all(reader(info.session_id))
        when = info.last_activity or info.created
        row = ConversationRow(
            info.session_id, title_of(items) or "", when.timestamp() if when else 0.0, info.items
        )
        added += bool(await store.index_conversation(scope, row))  # type: ignore[attr-defined]
    return added
