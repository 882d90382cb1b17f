"""The session inventory over any store: list, find, delete a user's sessions, expire idle ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multisessions.errors import StoreError
from multisessions.stores import SessionInfo, SessionStore


async def list_sessions(
    store: SessionStore, *, user: str | None = None, prefix: str | None = None
) -> list[SessionInfo]:
    """Sessions in the store, most recently active first, optionally one user's or by id prefix."""
    rows = await store.list_sessions()
    if user is not None:
        rows = [r for r in rows if r.parsed.user == user]
    if prefix is not None:
        rows = [r for r in rows if r.session_id.startswith(prefix)]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(rows, key=lambda r: (r.last_activity or oldest, r.session_id), reverse=True)


async def find_session(store: SessionStore, session_id: str) -> SessionInfo:
    """The inventory row of one session; ``StoreError`` if the store has no such session."""
    for row in await store.list_sessions():
        if row.session_id == session_id:
            return row
    raise StoreError(f"no session {session_id!r} in {store.name}; see: python agent.py sessions list")


async def delete_sessions(store: SessionStore, rows: list[SessionInfo], *, dry_run: bool = False) -> int:
    """Delete the sessions in ``rows`` (unless ``dry_run``); returns how many items they held."""
    if not dry_run:
        for row in rows:
            await store.delete(row.session_id)
    return sum(row.items for row in rows)


async def delete_user_sessions(store: SessionStore, user: str, *, dry_run: bool = False) -> list[SessionInfo]:
    """Delete every session whose id names ``user`` (user, feature and dated ids)."""
    rows = await list_sessions(store, user=user)
    await delete_sessions(store, rows, dry_run=dry_run)
    return rows


async def expire_sessions(
    store: SessionStore, older_than_days: float, *, now: datetime | None = None, dry_run: bool = False
) -> list[SessionInfo]:
    """Delete sessions idle for longer than ``older_than_days``; returns what was (or would be) removed."""
    if older_than_days < 0:
        raise StoreError("--older-than must be zero or more days")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    stale = [r for r in await store.list_sessions() if r.last_activity and r.last_activity < cutoff]
    await delete_sessions(store, stale, dry_run=dry_run)
    return stale


def format_listing(rows: list[SessionInfo]) -> list[str]:
    """The inventory as aligned text lines, one per session, ids first so they can be copied."""

    def when(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"

    lines = [
        f"{'SESSION ID':<32} {'KIND':<8} {'ITEMS':>5}  {'CREATED (UTC)':<19}  {'LAST ACTIVITY':<19}  PARTS"
    ]
    for r in rows:
        p = r.parsed
        parts = ", ".join(f"{k}={v}" for k, v in vars(p).items() if k != "kind" and v is not None)
        times = f"{when(r.created):<19}  {when(r.last_activity):<19}"
        lines.append(f"{r.session_id:<32} {p.kind:<8} {r.items:>5}  {times}  {parts}")
    return lines
