"""What a session holds, read back: every stored item, and one line of text for each.

Stored items are the SDK's input items (plain dicts): user and assistant messages, tool calls
and their outputs; a handoff is a tool call named ``transfer_to_...``.
"""

from __future__ import annotations

import json
from typing import Any

from agents.memory import Session

ALL_ITEMS = 2**31 - 1
"""A limit no session reaches: ``get_items(ALL_ITEMS)`` reads everything on every store,
whatever ``SessionSettings(limit=...)`` the session carries."""


async def read_all(session: Session) -> list[Any]:
    """Every item the store holds for the session, oldest first."""
    return await session.get_items(ALL_ITEMS)


def message_text(item: Any) -> str:
    """The plain text of a message item (user or assistant); '' for anything else."""
    content = item.get("content") if isinstance(item, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def item_summary(item: Any) -> str:
    """One line for a stored item: role and text, or the tool call / handoff it records."""
    if not isinstance(item, dict):
        return f"(unreadable item: {type(item).__name__})"
    kind = item.get("type")
    if item.get("role") in ("user", "assistant", "system", "developer"):
        return f"{item['role']}: {message_text(item)}"
    if kind == "function_call":
        name = str(item.get("name", ""))
        if name.startswith("transfer_to_"):
            return f"handoff: {name}"
        return f"tool call: {name}({item.get('arguments', '')})"
    if kind == "function_call_output":
        return f"tool output: {str(item.get('output', ''))[:80]}"
    return f"{kind or 'item'}"


def history_lines(items: list[Any]) -> list[str]:
    """A session's history, one line per item: role and text; tool calls and handoffs in one line.

    Stored items do not say which agent wrote them; after a handoff, the agent is known from the
    handoff's output, so assistant lines carry its name from then on.
    """
    lines, agent = [], None
    for item in items:
        line = item_summary(item)
        agent = handoff_target(item) or agent
        if isinstance(item, dict) and item.get("role") == "assistant" and agent:
            line = line.replace("assistant:", f"assistant ({agent}):", 1)
        lines.append(line)
    return lines


def handoff_target(item: Any) -> str | None:
    """The agent a stored handoff output names (the SDK stores ``{"assistant": "<name>"}``), or None."""
    if not isinstance(item, dict) or item.get("type") != "function_call_output":
        return None
    output = item.get("output")
    if not isinstance(output, str) or "assistant" not in output:
        return None
    try:
        value = json.loads(output)
    except ValueError:
        return None
    name = value.get("assistant") if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


TITLE_LENGTH = 60
"""The longest title taken from a first message, in characters (an ellipsis marks a cut)."""


def title_of(items: list[Any], length: int = TITLE_LENGTH) -> str | None:
    """A conversation's title from its first user message: one line, cut at a word, or None."""
    for item in items:
        if isinstance(item, dict) and item.get("role") == "user":
            text = " ".join(message_text(item).split())  # newlines and runs of spaces: one space
            if not text:
                continue
            if len(text) <= length:
                return text
            cut = text[: length - 1]
            word = cut.rsplit(" ", 1)[0]
            return (word if len(word) >= length // 2 else cut).rstrip(" ,.;:") + "…"
    return None
