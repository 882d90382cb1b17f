"""Side effects that happen once per tool call, however often the turn around them runs.

A tool that moves money (a refund) may run twice for one decision: a resume that crashes after
the tool ran, but before its turn was committed, runs the tool again when the decision is
retried. The SDK gives each call a stable id (``ToolContext.tool_call_id``, kept in the paused
turn's state), so the effect is recorded under that id in the session's store, in one write
that keeps the first value: the second run finds it and does nothing more.

Pass a ``Ledger`` as the run's context (``Runner.run(..., context=Ledger(store, session_id))``)
and record from the tool::

    order, new = await ctx.context.once("refund", ctx.tool_call_id, order_id)
"""

from __future__ import annotations

from multisessions.stores import SessionStore

_SEP = "\x1f"  # never in a session id (ids are printable), so no session reads another's entries


def session_prefix(session_id: str) -> str:
    """What the key of every side effect recorded for ``session_id`` starts with (and no other's)."""
    return f"{session_id}{_SEP}"


def effect_parts(key: str) -> tuple[str, str, str]:
    """The session id, kind and tool call id a side effect's key was made of (``Ledger``'s keys)."""
    session_id, _, rest = key.partition(_SEP)
    kind, _, call_id = rest.partition(_SEP)
    return session_id, kind, call_id


class Ledger:
    """One session's record of side effects, each kept once per tool call id."""

    def __init__(self, store: SessionStore, session_id: str) -> None:
        self.store = store
        self.session_id = session_id

    def _prefix(self, kind: str) -> str:
        return f"{session_prefix(self.session_id)}{kind}{_SEP}"

    async def once(self, kind: str, call_id: str, value: str) -> tuple[str, bool]:
        """Record ``value`` for this call unless it is recorded already; returns the recorded
        value and whether this call recorded it (False: the effect already happened)."""
        if not call_id:
            raise ValueError("a side effect needs the tool call's id to be done once")
        return await self.store.record_once(self._prefix(kind) + call_id, value)

    async def entries(self, kind: str) -> dict[str, str]:
        """What was recorded for ``kind`` in this session, by tool call id, oldest first."""
        prefix = self._prefix(kind)
        return {key[len(prefix) :]: value for key, value in (await self.store.list_effects(prefix)).items()}

    async def clear(self, kind: str) -> int:
        """Forget this session's ``kind`` entries (a demo starting afresh); returns how many."""
        return await self.store.forget_effects(self._prefix(kind))
