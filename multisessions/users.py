"""A user's data on request: everything kept for one user, exported as one document, or forgotten.

A user's data is every session whose id names them (``user_alice``, ``chat_feature_user_alice``,
``user_alice_20241215``) in one tenant, and what the store keeps beside each: the items, the
current agent, a turn paused for approval, the side effects recorded for its tool calls, the
commit receipts and leases of its turns. Ids are matched on their parsed parts and their tenant
(as the inventory matches them), so ``alice2``, ``alice_x``, a user literally named ``acme:alice``
and Alice of another tenant are other people. Thread sessions (``thread_<id>``) are shared by
whoever takes part: they belong to no single user, and are neither exported nor forgotten here.

Each session is read or removed while holding its lease: a turn running on it finishes first,
and no turn starts until the export has read it or the forget has removed it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from multisessions.approvals import PausedTurn
from multisessions.conversations import MAX_LIMIT, list_conversations
from multisessions.effects import effect_parts, session_prefix
from multisessions.errors import StoreError
from multisessions.inventory import list_sessions
from multisessions.items import read_all
from multisessions.locks import hold_session
from multisessions.naming import in_tenant, parse_session_id, user_scope
from multisessions.stores import SessionInfo, SessionStore, close_session, refuse_encrypted, refuse_sealed

MAX_PASSES = 10
"""How many times ``forget_user`` lists the user's sessions again while turns keep creating new ones."""


def _count(label: str) -> Any:
    return field(default=0, metadata={"label": label})


@dataclass
class Forgotten:
    """What ``forget_user`` removed (or, with ``dry_run``, would remove), counted in the store.

    Each field is one kind of data kept for a user; ``describe`` and ``as_dict`` list them all."""

    sessions: int = _count("session(s)")
    items: int = _count("items")
    current_agents: int = _count("current agent(s)")
    paused_turns: int = _count("paused turn(s)")
    side_effects: int = _count("side effect(s)")
    summaries: int = _count("summary(ies)")
    memory_facts: int = _count("memory fact(s)")

    def add(self, other: Forgotten) -> None:
        """Count ``other`` in too (another pass, another session)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        """The counts by name, as JSON takes them."""
        return asdict(self)

    def describe(self) -> str:
        """What was removed, in one line: ``4 session(s), 18 items, ...``."""
        return ", ".join(f"{getattr(self, f.name)} {f.metadata['label']}" for f in fields(self))


def _belongs(session_id: str, user: str, tenant: str | None) -> bool:
    return in_tenant(session_id, tenant) and parse_session_id(session_id).user == user


async def _sessions_of(store: SessionStore, user: str, tenant: str | None) -> dict[str, SessionInfo | None]:
    """The user's session ids in the tenant: those with items, and those with only a paused turn
    or side effects (a first turn that paused writes no items); the inventory row where there is one."""
    found: dict[str, SessionInfo | None] = {
        row.session_id: row for row in await list_sessions(store, tenant=tenant, user=user)
    }
    beside = [*await store.list_pending(), *(effect_parts(key)[0] for key in await store.effect_keys())]
    for session_id in beside:
        if session_id not in found and _belongs(session_id, user, tenant):
            found[session_id] = None
    return dict(sorted(found.items()))


@asynccontextmanager
async def _holding_sessions(
    store: SessionStore, user: str, tenant: str | None
) -> AsyncIterator[dict[str, SessionInfo | None]]:
    """Hold the lease of every session of the user, and list them again while holding: the listing
    is then exact. If it shows a session not held (a turn created it meanwhile), all are given up
    and taken again with it, always in id order: two of these on one user never wait on each other."""
    ids: set[str] = set()
    while True:
        async with AsyncExitStack() as stack:
            for session_id in sorted(ids):
                await stack.enter_async_context(hold_session(session_id, store.leases))
            found = await _sessions_of(store, user, tenant)
            if found.keys() <= ids:
                yield found
                return
        ids |= found.keys()


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def _export_session(store: SessionStore, session_id: str, info: SessionInfo | None) -> dict[str, Any]:
    session = store.open(session_id)
    try:
        items = await read_all(session)
    finally:
        await close_session(session)
    stored = info.items if info else 0
    if len(items) < stored:
        # The session's reads skip what they cannot decode: the export would be silently short.
        raise StoreError(
            f"session {session_id!r} holds {stored - len(items)} item(s) that cannot be read (corrupt, or "
            "encrypted with another SESSION_ENCRYPTION_KEY); nothing was exported"
        )
    refuse_encrypted(session_id, items)  # read without the key it was written with: tokens, not data
    record = await store.load_pending(session_id)
    paused = None
    if record is not None:
        turn = PausedTurn.loads(record)
        paused = {
            "starting_agent": turn.starting_agent,
            "approvals": [vars(a) for a in turn.approvals],
            "items": turn.items,
        }
    effects = []
    for key, value in (await store.list_effects(session_prefix(session_id))).items():
        _, kind, call_id = effect_parts(key)
        effects.append({"kind": kind, "call_id": call_id, "value": value})
    parsed = parse_session_id(session_id)
    summary, _ = await store.summary_state(session_id)
    refuse_sealed(
        f"session {session_id!r}", [e["value"] for e in effects] + ([summary.text] if summary else [])
    )
    return {
        "session_id": session_id,
        "kind": parsed.kind,
        "created": _when(info.created if info else None),
        "last_activity": _when(info.last_activity if info else None),
        "current_agent": await store.load_last_agent(session_id),
        "items": items,
        "paused_turn": paused,
        "side_effects": effects,
        "summary": None if summary is None else {"text": summary.text, "covered_items": summary.covered},
    }


async def export_user(store: SessionStore, user: str, *, tenant: str | None = None) -> dict[str, Any]:
    """Everything kept for ``user`` in ``tenant``, as one JSON-serialisable document.

    The user's conversation index (titles, tags), and each session (user, feature and dated ids)
    with its kind, timestamps, current agent, items
    (decrypted by an encrypted store), paused turn and side effects, read while holding every one
    of the user's sessions, so no turn is half in it. A user or tenant the naming helpers would
    refuse raises ``ValueError``."""
    exported_at = datetime.now(UTC).isoformat()
    async with _holding_sessions(store, user, tenant) as found:
        sessions = [await _export_session(store, sid, info) for sid, info in found.items()]
        memory = await store.load_memory(user_scope(user, tenant))
        refuse_sealed(f"the memory of user {user!r}", memory.values())
        conversations = await _conversations_of(store, user, tenant)
    return {
        "user": user,
        "tenant": tenant,
        "exported_at": exported_at,
        "memory": memory,
        "conversations": conversations,
        "sessions": sessions,
    }


async def _conversations_of(store: SessionStore, user: str, tenant: str | None) -> list[dict[str, Any]]:
    """The user's entries in the conversation index (title, last activity, items, tags)."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await list_conversations(store, user, tenant=tenant, limit=MAX_LIMIT, cursor=cursor)
        found += [
            {
                "session_id": c.session_id,
                "title": c.title,
                "last_activity": _when(c.last_activity),
                "items": c.items,
                "tags": c.tags,
            }
            for c in page.conversations
        ]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def _forget_session(
    store: SessionStore, session_id: str, info: SessionInfo | None, paused: bool, dry_run: bool
) -> Forgotten:
    """Remove one session and everything beside it (its lease is held); counts what the store held."""
    agent = await store.load_last_agent(session_id) is not None
    summary, _ = await store.summary_state(session_id)
    prefix = session_prefix(session_id)
    if dry_run:
        items = info.items if info else 0
        effects = len(await store.list_effects(prefix))
    else:
        effects = await store.forget_effects(prefix)
        items = await store.delete(session_id)  # items, row, current agent, paused turn, summary, receipt
    return Forgotten(
        sessions=1,
        items=items,
        current_agents=int(agent),
        paused_turns=int(paused),
        side_effects=effects,
        summaries=int(summary is not None),
    )


async def forget_user(
    store: SessionStore, user: str, *, tenant: str | None = None, dry_run: bool = False
) -> Forgotten:
    """Remove everything kept for ``user`` in ``tenant``; nothing of any other user or tenant.

    Holds each session's lease while removing it (a running turn finishes first, and is removed
    too), then lists again until a listing finds nothing: a session a turn created meanwhile is
    removed as well. Returns what was removed, counted in the store; ``dry_run`` removes nothing
    and counts what would go. ``StoreError`` if turns keep creating sessions for ``MAX_PASSES``."""
    total = Forgotten()
    scope = user_scope(user, tenant)
    for _ in range(MAX_PASSES):
        async with _holding_sessions(store, user, tenant) as found:
            # The memory goes while no turn of the user runs (a turn writes it with its items).
            if dry_run:
                total.memory_facts += len(await store.load_memory(scope))
            else:
                total.memory_facts += await store.forget_memory(scope)
            if not found:
                return total
            waiting = set(await store.list_pending())
            for session_id, info in found.items():
                total.add(await _forget_session(store, session_id, info, session_id in waiting, dry_run))
        if dry_run:
            return total
    raise StoreError(
        f"user {user!r} kept starting new sessions while being forgotten; stop their turns (revoke "
        "their access) and run it again"
    )
