"""The session inventory over any store: list, find, delete a user's sessions, expire idle ones.

Every operation is scoped to one tenant: ``tenant=None`` means the sessions with no tenant
(``user_alice``), ``tenant="acme"`` the ones under ``acme:``. A user, a prefix or an age never
reaches across tenants; only ``all_tenants=True`` (an administrator's choice, said out loud)
covers every tenant at once. Ids are matched on their text (``in_tenant``), so a user literally
named ``acme:alice`` is not user ``alice`` of tenant ``acme``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from multisessions.errors import StoreError
from multisessions.naming import check_tenant, in_tenant, user_session_id
from multisessions.stores import SessionInfo, SessionStore


async def list_sessions(
    store: SessionStore,
    *,
    tenant: str | None = None,
    user: str | None = None,
    prefix: str | None = None,
    all_tenants: bool = False,
) -> list[SessionInfo]:
    """One tenant's sessions (no tenant by default), most recently active first.

    ``user`` keeps that user's sessions, ``prefix`` the ids starting with it, both inside the
    tenant; ``all_tenants=True`` drops the tenant scope. A user or tenant the naming helpers
    would refuse (``"alice "``) raises ``ValueError``.
    """
    if tenant is not None:
        check_tenant(tenant)
        if all_tenants:
            raise ValueError("give a tenant or all tenants, not both")
    if user is not None:
        user_session_id(user)  # the same checks as the ids it would match
    rows = [r for r in await store.list_sessions() if all_tenants or in_tenant(r.session_id, tenant)]
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
    """Delete the sessions in ``rows`` (unless ``dry_run``); returns how many items they held.

    Counted after the fact: the items each delete removed, and a listing afterwards; a session
    still listed raises ``StoreError`` naming it, rather than reporting what did not happen."""
    if dry_run:
        return sum(row.items for row in rows)
    removed = 0
    for row in rows:
        removed += await store.delete(row.session_id)
    if rows:
        wanted = {row.session_id for row in rows}
        left = sorted(wanted & {row.session_id for row in await store.list_sessions()})
        if left:
            raise StoreError(
                f"{len(left)} of {len(rows)} session(s) are still in {store.name} after deleting them "
                f"(first: {left[0]!r}); nothing else is claimed removed: check the store and retry"
            )
    return removed


async def delete_user_sessions(
    store: SessionStore, user: str, *, tenant: str | None = None, dry_run: bool = False
) -> list[SessionInfo]:
    """Delete every session of ``user`` in ``tenant`` (user, feature and dated ids); no other tenant's."""
    rows = await list_sessions(store, tenant=tenant, user=user)
    await delete_sessions(store, rows, dry_run=dry_run)
    return rows


async def expire_sessions(
    store: SessionStore,
    older_than_days: float,
    *,
    tenant: str | None = None,
    all_tenants: bool = False,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[SessionInfo]:
    """Delete one tenant's sessions idle for longer than ``older_than_days`` (every tenant's with
    ``all_tenants=True``); returns what was (or would be) removed."""
    if not older_than_days >= 0 or older_than_days == float("inf"):
        raise ValueError(f"--older-than {older_than_days!r} must be a finite number of days, zero or more")
    try:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    except OverflowError:  # longer ago than datetime reaches: nothing is that old
        cutoff = datetime.min.replace(tzinfo=UTC)
    rows = await list_sessions(store, tenant=tenant, all_tenants=all_tenants)
    stale = [r for r in rows if r.last_activity and r.last_activity < cutoff]
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
