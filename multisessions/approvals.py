"""Turns paused for a human's approval, kept beside the session until someone decides.

A tool made with ``needs_approval=True`` pauses the SDK's run (``result.interruptions``). The
paused turn is not written to the history (a call without its output would be half a turn):
its items and the SDK's ``RunState`` are kept beside the session as one record, and the
session refuses new turns until a supervisor, in any process, approves or rejects the call.
The resumed turn is then committed whole: the paused part and the rest, in one write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agents import RunResult, RunResultStreaming

from multisessions.stores import SessionStore


@dataclass(frozen=True)
class Approval:
    """One tool call waiting for a decision."""

    session_id: str
    agent: str
    tool: str
    arguments: str
    call_id: str


@dataclass(frozen=True)
class PausedTurn:
    """What is kept beside a session while its turn waits: the SDK's state and the turn's items."""

    starting_agent: str
    state: str
    items: list[Any]
    approvals: list[Approval]

    def dumps(self) -> str:
        return json.dumps(
            {
                "starting_agent": self.starting_agent,
                "state": self.state,
                "items": self.items,
                "approvals": [vars(a) for a in self.approvals],
            }
        )

    @classmethod
    def loads(cls, text: str) -> PausedTurn:
        data = json.loads(text)
        return cls(
            starting_agent=data["starting_agent"],
            state=data["state"],
            items=data["items"],
            approvals=[Approval(**a) for a in data["approvals"]],
        )


def paused_turn(
    session_id: str, starting_agent: str, result: RunResult | RunResultStreaming, items: list[Any]
) -> PausedTurn:
    """The record of a run that stopped for approval."""
    approvals = [
        Approval(
            session_id=session_id,
            agent=item.agent.name,
            tool=item.name or "",
            arguments=item.arguments or "",
            call_id=str(getattr(item.raw_item, "call_id", "") or ""),
        )
        for item in result.interruptions
    ]
    return PausedTurn(starting_agent, result.to_state().to_string(), list(items), approvals)


async def pending_approvals(store: SessionStore, session_id: str | None = None) -> list[Approval]:
    """Every tool call waiting for a decision in ``store`` (or on one session), oldest session first."""
    ids = [session_id] if session_id is not None else sorted(await store.list_pending())
    waiting: list[Approval] = []
    for sid in ids:
        record = await store.load_pending(sid)
        if record is not None:
            waiting.extend(PausedTurn.loads(record).approvals)
    return waiting
