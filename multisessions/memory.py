"""What a user's conversations share: facts kept per user (and tenant), beside their sessions.

Sessions keep conversations apart, as they should: Alice's support ticket and her sales inquiry
are two histories. But a fact she gives one (her email) is hers, not that conversation's. User
memory keeps such facts per (tenant, user), read by every session of that user and by no one
else's: the scope comes from the session id (``user_alice``, ``acme:sales_feature_user_alice``),
so a thread id, which names no user, has no memory.

An agent sees the memory in its instructions (``with_memory("...")``) and adds to it with the
``remember`` tool. A fact remembered during a turn is written in that turn's one write, with its
items: a failed turn leaves memory unchanged.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

from agents import Agent, RunContextWrapper, function_tool

from multisessions.naming import memory_scope, scope_parts, user_scope

__all__ = ["memory_scope", "remember", "running_turn", "scope_parts", "user_scope", "with_memory"]

MEMORY_HEADING = "What you know about this user from their other conversations:"
"""The line before the remembered facts in an agent's instructions (``with_memory``)."""
MAX_FACTS = 50
"""Facts kept per user: a ``remember`` past this is refused (forget some first)."""
MAX_FACT_CHARS = 64
MAX_VALUE_CHARS = 500


class TurnMemory(Protocol):
    """What the running turn offers the memory tools (``turns.PendingTurn``)."""

    scope: str | None
    memory: dict[str, str]
    memory_writes: dict[str, str]


running_turn: ContextVar[TurnMemory | None] = ContextVar("multisessions_running_turn", default=None)
"""The turn whose run is under way in this task (set by ``run_turn``, ``one_turn`` and the rest)."""


def with_memory(instructions: str) -> Any:
    """Instructions for ``Agent(instructions=...)`` followed by the user's memory, when the turn has any.

    The SDK calls them at every model call, so a fact remembered earlier in the turn is there too."""

    def instructions_with_memory(context: RunContextWrapper[Any], agent: Agent[Any]) -> str:
        turn = running_turn.get()
        if turn is None or not turn.memory:
            return instructions
        facts = "\n".join(f"- {fact}: {value}" for fact, value in sorted(turn.memory.items()))
        return f"{instructions}\n\n{MEMORY_HEADING}\n{facts}"

    return instructions_with_memory


@function_tool
def remember(fact: str, value: str) -> str:
    """Remember a fact about the user for all of their conversations (for example fact "email",
    value "alice@example.com"). Use it when the user tells you something about themselves that
    other conversations with them will need."""
    turn = running_turn.get()
    if turn is None or turn.scope is None:
        return "not remembered: this conversation belongs to no user"
    fact = " ".join(str(fact).split()).lower()[:MAX_FACT_CHARS]
    value = " ".join(str(value).split())[:MAX_VALUE_CHARS]
    if not fact or not value:
        return "not remembered: give a fact name and a value"
    if fact not in turn.memory and len(turn.memory) >= MAX_FACTS:
        return f"not remembered: this user already has {MAX_FACTS} facts"
    turn.memory[fact] = value
    turn.memory_writes[fact] = value
    return f"remembered {fact}"
